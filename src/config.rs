//! Loading and checking the configuration: TOML through the `config` crate, `WAQ__SECTION__KEY`
//! environment overrides, secrets from `*_env` / `*_file` keys. Every error names the key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// A secret value (token, app secret). Never printed: `Debug` shows `***`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// What `serve` runs with: every value checked, every secret resolved.
#[derive(Debug, Clone)]
pub struct Config {
    pub state_dir: PathBuf,
    pub log: LogConfig,
    pub socket: SocketConfig,
    pub api: ApiConfig,
    pub senders: Vec<SenderConfig>,
    pub dispatch: DispatchConfig,
    pub webhook: Option<WebhookConfig>,
    pub store: StoreConfig,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// `error`, `warn`, `info`, `debug`, `trace`, or a tracing filter directive.
    pub level: String,
    pub json: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketConfig {
    pub path: PathBuf,
    pub mode: u32,
    pub allowed_uids: Option<Vec<u32>>,
    pub allowed_gids: Option<Vec<u32>>,
    pub max_connections: usize,
    /// Body limit of `POST /v1/messages` and every request but the batch.
    pub max_request_bytes: usize,
    /// Body limit of `POST /v1/messages/batch`.
    pub max_batch_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    pub base_url: String,
    pub version: String,
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderConfig {
    pub name: String,
    pub phone_number_id: String,
    pub token: Secret,
    /// Messages per second Meta allows this number (80 by default, 1,000 after the upgrade).
    pub mps: u32,
}

/// A sender stands for its name, so validation checks a request's `sender` against the
/// configuration itself instead of a list of names copied for every request.
impl AsRef<str> for SenderConfig {
    fn as_ref(&self) -> &str {
        &self.name
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DispatchConfig {
    /// Requests to Meta in flight at once, across senders.
    pub max_in_flight: usize,
    /// Optional cap on requests per second across all senders.
    pub global_mps: Option<u32>,
    pub retry_min: Duration,
    pub retry_max: Duration,
    pub max_attempts: u32,
    /// A message not sent after this long since enqueue fails (`max_age_exceeded`).
    pub max_age: Duration,
    /// Treat a window as closed this long before its 24 h end.
    pub window_margin: Duration,
    /// Per recipient: one message every `pair_interval`, bursts of up to `pair_burst`.
    pub pair_interval: Duration,
    pub pair_burst: u32,
    pub on_restart_sending: RestartPolicy,
    /// Terminal messages (sent, delivered, read, failed, expired, cancelled) are kept this long.
    pub retention: Duration,
}

/// What to do on start with messages found `sending` (the daemon stopped mid-request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartPolicy {
    /// Send again: at-least-once (Meta may have accepted the first request).
    Resend,
    /// Mark them failed with `interrupted`: at-most-once.
    Fail,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    pub listen: String,
    pub path: String,
    pub app_secret: Secret,
    pub verify_token: Secret,
    pub forward_url: Option<String>,
    pub max_body_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    pub cache_capacity_bytes: u64,
    pub flush_every_ms: Option<u64>,
}

/// Names of the fields as written in TOML: what deserialization sees.
mod raw {
    use serde::Deserialize;
    use std::path::PathBuf;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Root {
        pub state_dir: Option<PathBuf>,
        #[serde(default)]
        pub log: Log,
        #[serde(default)]
        pub socket: Socket,
        #[serde(default)]
        pub api: Api,
        #[serde(default)]
        pub senders: Vec<Sender>,
        #[serde(default)]
        pub dispatch: Dispatch,
        pub webhook: Option<Webhook>,
        #[serde(default)]
        pub store: Store,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Log {
        pub level: Option<String>,
        pub format: Option<String>,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Socket {
        pub path: Option<PathBuf>,
        pub mode: Option<String>,
        pub allowed_uids: Option<Vec<u32>>,
        pub allowed_gids: Option<Vec<u32>>,
        pub max_connections: Option<usize>,
        pub max_request_bytes: Option<usize>,
        pub max_batch_bytes: Option<usize>,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Api {
        pub base_url: Option<String>,
        pub version: Option<String>,
        pub request_timeout_ms: Option<u64>,
        pub connect_timeout_ms: Option<u64>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Sender {
        pub name: String,
        pub phone_number_id: String,
        pub token: Option<String>,
        pub token_env: Option<String>,
        pub token_file: Option<PathBuf>,
        pub mps: Option<u32>,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Dispatch {
        pub max_in_flight: Option<usize>,
        pub global_mps: Option<u32>,
        pub retry_min_ms: Option<u64>,
        pub retry_max_ms: Option<u64>,
        pub max_attempts: Option<u32>,
        pub max_age_s: Option<u64>,
        pub window_margin_s: Option<u64>,
        pub pair_interval_ms: Option<u64>,
        pub pair_burst: Option<u32>,
        pub on_restart_sending: Option<super::RestartPolicy>,
        pub retention_s: Option<u64>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Webhook {
        pub listen: Option<String>,
        pub path: Option<String>,
        pub app_secret: Option<String>,
        pub app_secret_env: Option<String>,
        pub app_secret_file: Option<PathBuf>,
        pub verify_token: Option<String>,
        pub verify_token_env: Option<String>,
        pub verify_token_file: Option<PathBuf>,
        pub forward_url: Option<String>,
        pub max_body_bytes: Option<usize>,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Store {
        pub cache_capacity_mb: Option<u64>,
        pub flush_every_ms: Option<u64>,
    }
}

/// A configuration error: which key, and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

fn err(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        message: message.into(),
    }
}

pub const DEFAULT_SOCKET_PATH: &str = "/run/waq/waq.sock";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/waq";
/// sled's page cache. Its resident memory is about twice this: at 16 a daemon holding 1.2
/// million queued messages reached 251-261 MiB, at 8 228-230 MiB, with enqueue and dispatch
/// at depth still within a few percent of the empty figures (docs/PERFORMANCE.md).
pub const DEFAULT_CACHE_MB: u64 = 8;

impl Config {
    /// Loads `path` with `WAQ__SECTION__KEY` overrides from the environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        if !path.exists() {
            return Err(err(
                "--config",
                format!(
                    "{} does not exist; pass the path of a waq config.toml",
                    path.display()
                ),
            ));
        }
        let built = config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix("WAQ")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true)
                    .list_separator(",")
                    .with_list_parse_key("socket.allowed_uids")
                    .with_list_parse_key("socket.allowed_gids"),
            )
            .build()
            .map_err(|e| err(path.display().to_string(), e.to_string()))?;
        let raw: raw::Root = built
            .try_deserialize()
            .map_err(|e| err(path.display().to_string(), e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::from_raw(raw, base)
    }

    /// Parses TOML text (no environment overrides); relative file paths resolve against `base`.
    pub fn from_toml(text: &str, base: &Path) -> Result<Config, ConfigError> {
        let built = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .map_err(|e| err("config", e.to_string()))?;
        let raw: raw::Root = built
            .try_deserialize()
            .map_err(|e| err("config", e.to_string()))?;
        Config::from_raw(raw, base)
    }

    fn from_raw(raw: raw::Root, base: &Path) -> Result<Config, ConfigError> {
        let log = LogConfig {
            level: raw.log.level.unwrap_or_else(|| "info".into()),
            json: match raw.log.format.as_deref() {
                None | Some("text") => false,
                Some("json") => true,
                Some(other) => {
                    return Err(err(
                        "log.format",
                        format!("`{other}` is not a log format; use \"text\" or \"json\""),
                    ))
                }
            },
        };
        tracing_subscriber::EnvFilter::try_new(&log.level)
            .map_err(|e| err("log.level", format!("not a valid level or filter: {e}")))?;

        let mode_text = raw.socket.mode.unwrap_or_else(|| "0660".into());
        let mode = u32::from_str_radix(mode_text.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| {
                err(
                    "socket.mode",
                    format!("`{mode_text}` is not an octal file mode such as \"0660\""),
                )
            })?;
        let socket = SocketConfig {
            path: raw
                .socket
                .path
                .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET_PATH)),
            mode,
            allowed_uids: raw.socket.allowed_uids,
            allowed_gids: raw.socket.allowed_gids,
            max_connections: positive("socket.max_connections", raw.socket.max_connections, 1024)?,
            max_request_bytes: positive(
                "socket.max_request_bytes",
                raw.socket.max_request_bytes,
                32 * 1024,
            )?,
            max_batch_bytes: positive(
                "socket.max_batch_bytes",
                raw.socket.max_batch_bytes,
                32 * 1024 * 1024,
            )?,
        };

        let base_url = raw
            .api
            .base_url
            .unwrap_or_else(|| "https://graph.facebook.com".into());
        let version = raw.api.version.unwrap_or_else(|| "v25.0".into());
        if !version.starts_with('v') || version[1..].parse::<f64>().is_err() {
            return Err(err(
                "api.version",
                format!("`{version}` is not a Graph API version such as \"v25.0\""),
            ));
        }
        crate::cloud::check_endpoint(&base_url, &version).map_err(|e| err(e.key, e.message))?;
        let api = ApiConfig {
            base_url: base_url.trim_end_matches('/').to_string(),
            version,
            request_timeout: Duration::from_millis(positive_u64(
                "api.request_timeout_ms",
                raw.api.request_timeout_ms,
                15_000,
            )?),
            connect_timeout: Duration::from_millis(positive_u64(
                "api.connect_timeout_ms",
                raw.api.connect_timeout_ms,
                5_000,
            )?),
        };

        if raw.senders.is_empty() {
            return Err(err(
                "senders",
                "no [[senders]] configured; add one per business phone number",
            ));
        }
        let mut senders = Vec::with_capacity(raw.senders.len());
        for (i, s) in raw.senders.into_iter().enumerate() {
            let key = |k: &str| format!("senders[{i}].{k}");
            if s.name.is_empty()
                || !s
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(err(key("name"), "use letters, digits, `_` or `-`"));
            }
            if senders.iter().any(|o: &SenderConfig| o.name == s.name) {
                return Err(err(key("name"), format!("`{}` is used twice", s.name)));
            }
            if s.phone_number_id.is_empty()
                || !s.phone_number_id.chars().all(|c| c.is_ascii_digit())
            {
                return Err(err(
                    key("phone_number_id"),
                    "must be the numeric Phone Number ID from Meta's WhatsApp Manager",
                ));
            }
            let token = secret(
                &key("token"),
                s.token,
                s.token_env,
                s.token_file.map(|p| base.join(p)),
            )?
            .ok_or_else(|| err(key("token"), "set token_env, token_file or token"))?;
            let mps = s.mps.unwrap_or(80);
            if !(1..=10_000).contains(&mps) {
                return Err(err(key("mps"), "must be between 1 and 10000"));
            }
            senders.push(SenderConfig {
                name: s.name,
                phone_number_id: s.phone_number_id,
                token,
                mps,
            });
        }

        let d = raw.dispatch;
        let retry_min = positive_u64("dispatch.retry_min_ms", d.retry_min_ms, 1_000)?;
        let retry_max = positive_u64("dispatch.retry_max_ms", d.retry_max_ms, 300_000)?;
        if retry_max < retry_min {
            return Err(err(
                "dispatch.retry_max_ms",
                "must be at least dispatch.retry_min_ms",
            ));
        }
        let dispatch = DispatchConfig {
            max_in_flight: positive("dispatch.max_in_flight", d.max_in_flight, 512)?,
            global_mps: match d.global_mps {
                Some(0) => {
                    return Err(err(
                        "dispatch.global_mps",
                        "must be positive; remove it for no cap",
                    ))
                }
                other => other,
            },
            retry_min: Duration::from_millis(retry_min),
            retry_max: Duration::from_millis(retry_max),
            max_attempts: d.max_attempts.unwrap_or(10).max(1),
            max_age: Duration::from_secs(positive_u64("dispatch.max_age_s", d.max_age_s, 86_400)?),
            window_margin: Duration::from_secs(d.window_margin_s.unwrap_or(60)),
            pair_interval: Duration::from_millis(positive_u64(
                "dispatch.pair_interval_ms",
                d.pair_interval_ms,
                6_000,
            )?),
            pair_burst: d.pair_burst.unwrap_or(45).max(1),
            on_restart_sending: d.on_restart_sending.unwrap_or(RestartPolicy::Resend),
            retention: Duration::from_secs(positive_u64(
                "dispatch.retention_s",
                d.retention_s,
                7 * 86_400,
            )?),
        };

        let webhook = match raw.webhook {
            None => None,
            Some(w) => match w.listen {
                None => None,
                Some(listen) => {
                    if listen.parse::<std::net::SocketAddr>().is_err() {
                        return Err(err(
                            "webhook.listen",
                            format!("`{listen}` is not an address such as \"127.0.0.1:8080\""),
                        ));
                    }
                    let path = w.path.unwrap_or_else(|| "/webhook".into());
                    if !path.starts_with('/') {
                        return Err(err("webhook.path", "must start with `/`"));
                    }
                    let app_secret = secret(
                        "webhook.app_secret",
                        w.app_secret,
                        w.app_secret_env,
                        w.app_secret_file.map(|p| base.join(p)),
                    )?
                    .ok_or_else(|| {
                        err(
                            "webhook.app_secret",
                            "required when webhook.listen is set: set app_secret_env or app_secret_file",
                        )
                    })?;
                    let verify_token = secret(
                        "webhook.verify_token",
                        w.verify_token,
                        w.verify_token_env,
                        w.verify_token_file.map(|p| base.join(p)),
                    )?
                    .unwrap_or_default();
                    if let Some(url) = &w.forward_url {
                        if !(url.starts_with("http://") || url.starts_with("https://")) {
                            return Err(err("webhook.forward_url", "must be an http(s) URL"));
                        }
                    }
                    Some(WebhookConfig {
                        listen,
                        path,
                        app_secret,
                        verify_token,
                        forward_url: w.forward_url,
                        max_body_bytes: positive(
                            "webhook.max_body_bytes",
                            w.max_body_bytes,
                            3 * 1024 * 1024,
                        )?,
                    })
                }
            },
        };

        let store = StoreConfig {
            cache_capacity_bytes: raw.store.cache_capacity_mb.unwrap_or(DEFAULT_CACHE_MB)
                * 1024
                * 1024,
            flush_every_ms: match raw.store.flush_every_ms {
                Some(0) => None,
                Some(ms) => Some(ms),
                None => Some(500),
            },
        };

        Ok(Config {
            state_dir: raw
                .state_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
            log,
            socket,
            api,
            senders,
            dispatch,
            webhook,
            store,
        })
    }

    pub fn sender(&self, name: &str) -> Option<&SenderConfig> {
        self.senders.iter().find(|s| s.name == name)
    }

    pub fn sender_names(&self) -> Vec<String> {
        self.senders.iter().map(|s| s.name.clone()).collect()
    }
}

fn positive(key: &str, v: Option<usize>, default: usize) -> Result<usize, ConfigError> {
    match v {
        Some(0) => Err(err(key, "must be positive")),
        Some(n) => Ok(n),
        None => Ok(default),
    }
}

fn positive_u64(key: &str, v: Option<u64>, default: u64) -> Result<u64, ConfigError> {
    match v {
        Some(0) => Err(err(key, "must be positive")),
        Some(n) => Ok(n),
        None => Ok(default),
    }
}

/// Resolves a secret given inline, by environment variable name, or by file (systemd credentials).
fn secret(
    key: &str,
    inline: Option<String>,
    env: Option<String>,
    file: Option<PathBuf>,
) -> Result<Option<Secret>, ConfigError> {
    let given = [inline.is_some(), env.is_some(), file.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if given > 1 {
        return Err(err(
            key,
            "set only one of the inline value, `_env` and `_file`",
        ));
    }
    if let Some(v) = inline {
        return non_empty(key, v).map(Some);
    }
    if let Some(var) = env {
        let v = std::env::var(&var).map_err(|_| {
            err(
                format!("{key}_env"),
                format!("environment variable {var} is not set"),
            )
        })?;
        return non_empty(&format!("{key}_env"), v).map(Some);
    }
    if let Some(path) = file {
        let v = std::fs::read_to_string(&path).map_err(|e| {
            err(
                format!("{key}_file"),
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        return non_empty(&format!("{key}_file"), v.trim().to_string()).map(Some);
    }
    Ok(None)
}

fn non_empty(key: &str, v: String) -> Result<Secret, ConfigError> {
    if v.trim().is_empty() {
        Err(err(key, "is empty"))
    } else {
        Ok(Secret(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"
state_dir = "/tmp/x"
[[senders]]
name = "main"
phone_number_id = "120000000000001"
token = "t0k3n"
"#;

    #[test]
    fn defaults_fill_in() {
        let c = Config::from_toml(MIN, Path::new(".")).unwrap();
        assert_eq!(c.socket.mode, 0o660);
        assert_eq!(c.senders[0].mps, 80);
        assert_eq!(c.api.version, "v25.0");
        assert_eq!(c.dispatch.pair_burst, 45);
        assert!(c.webhook.is_none());
    }

    #[test]
    fn token_never_debug_printed() {
        let c = Config::from_toml(MIN, Path::new(".")).unwrap();
        assert!(!format!("{c:?}").contains("t0k3n"));
    }

    #[test]
    fn errors_name_the_key() {
        let bad_mode = MIN.replace("state_dir", "[socket]\nmode = \"999\"\n[x]\nstate_dir");
        assert!(Config::from_toml(&bad_mode, Path::new(".")).is_err());
        let e = Config::from_toml(&MIN.replace("t0k3n\"", "t0k3n\"\nmps = 0"), Path::new("."))
            .unwrap_err();
        assert_eq!(e.key, "senders[0].mps");
        let e = Config::from_toml(&format!("{MIN}\nbogus = 1\n"), Path::new(".")).unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        let e = Config::from_toml("state_dir = \"/x\"", Path::new(".")).unwrap_err();
        assert_eq!(e.key, "senders");
        let e = Config::from_toml(
            &MIN.replace("token = \"t0k3n\"", "token_env = \"WAQ_TEST_SURELY_UNSET\""),
            Path::new("."),
        )
        .unwrap_err();
        assert_eq!(e.key, "senders[0].token_env");
    }

    #[test]
    fn an_endpoint_the_client_cannot_use_is_refused_at_load() {
        for (api, key) in [
            (
                "base_url = \"https://user:secret@graph.facebook.com\"",
                "api.base_url",
            ),
            (
                "base_url = \"https://graph.facebook.com?debug=all\"",
                "api.base_url",
            ),
            ("base_url = \"https://graph facebook.com\"", "api.base_url"),
            ("version = \"v25.0/x\"", "api.version"),
        ] {
            let e =
                Config::from_toml(&format!("{MIN}\n[api]\n{api}\n"), Path::new(".")).unwrap_err();
            assert_eq!(e.key, key, "{api}: {e}");
            assert!(!e.to_string().contains("secret"), "{api}: {e}");
        }
    }

    #[test]
    fn webhook_requires_secret() {
        let text = format!("{MIN}\n[webhook]\nlisten = \"127.0.0.1:0\"\n");
        let e = Config::from_toml(&text, Path::new(".")).unwrap_err();
        assert_eq!(e.key, "webhook.app_secret");
    }
}

#[cfg(test)]
mod shipped_config {
    use super::*;

    /// The commented config.toml at the top of the repository parses and matches the defaults.
    #[test]
    fn shipped_config_toml_is_valid_and_shows_defaults() {
        std::env::set_var("WA_ACCESS_TOKEN", "test-token");
        let text = include_str!("../config.toml");
        let c = Config::from_toml(text, Path::new(".")).unwrap();
        let d = Config::from_toml(
            "[[senders]]\nname=\"main\"\nphone_number_id=\"120000000000001\"\ntoken=\"x\"",
            Path::new("."),
        )
        .unwrap();
        assert_eq!(c.socket, d.socket);
        assert_eq!(c.api, d.api);
        assert_eq!(c.dispatch, d.dispatch);
        assert_eq!(c.store, d.store);
        assert_eq!(c.log, d.log);
        assert_eq!(c.state_dir, d.state_dir);
    }
}

#[cfg(test)]
mod env_overrides {
    use super::*;

    #[test]
    fn waq_section_key_variables_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            "state_dir = \"/tmp/a\"\n[dispatch]\nmax_in_flight = 4\n[[senders]]\nname = \"main\"\nphone_number_id = \"1\"\ntoken = \"t\"\n",
        )
        .unwrap();
        // Keys unique to this test: the environment is shared by the test process.
        std::env::set_var("WAQ__DISPATCH__RETRY_MAX_MS", "4321");
        std::env::set_var("WAQ__API__VERSION", "v26.0");
        let c = Config::load(&path).unwrap();
        std::env::remove_var("WAQ__DISPATCH__RETRY_MAX_MS");
        std::env::remove_var("WAQ__API__VERSION");
        assert_eq!(c.dispatch.retry_max, Duration::from_millis(4321));
        assert_eq!(c.api.version, "v26.0");
        assert_eq!(c.dispatch.max_in_flight, 4, "the file's value stays");
    }
}
