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
    /// The environment variables the `*_env` keys name: the configuration reads them, so
    /// one spelt `WAQ_…` is no misspelt override (`misspelt_overrides`).
    pub secret_vars: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// `off`, `error`, `warn`, `info`, `debug`, `trace`, or tracing filter directives that
    /// each end in one (`waq=debug,info`).
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
    /// Request bodies held in memory at once, all connections together.
    pub max_body_memory_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    pub base_url: String,
    pub version: String,
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// `api.ca_file`'s certificates (PEM), trusted besides the built-in roots: read and
    /// checked at start, so a bad file stops start-up naming the key.
    pub extra_roots_pem: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderConfig {
    pub name: String,
    pub phone_number_id: String,
    pub token: Secret,
    /// Messages per second Meta allows this number (80 by default, 1,000 after the upgrade).
    pub mps: u32,
    /// Meta's messaging limit of the business portfolio: unique users it may reach outside a
    /// customer-service window in a moving 24 hours. `None`: not counted, nothing held.
    pub messaging_limit: Option<u32>,
    /// The business portfolio the number belongs to (senders naming the same one share its
    /// messaging limit); the sender's name when not set.
    pub portfolio: String,
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
    /// A message without a `ttl_s` not sent this long after it fell due fails (`max_age_exceeded`).
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// Names of the fields as written in TOML: what deserialization sees. Every number is an
/// `Int` (an `i64`, as TOML's are, so that a negative or oversized value reaches the range
/// check and its message), never a bare integer type: the `config` crate would turn `true`,
/// `80.9` or `"80"` into one.
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
        pub mode: Option<super::Mode>,
        pub allowed_uids: Option<super::Ids>,
        pub allowed_gids: Option<super::Ids>,
        pub max_connections: Option<super::Int>,
        pub max_request_bytes: Option<super::Int>,
        pub max_batch_bytes: Option<super::Int>,
        pub max_body_memory_bytes: Option<super::Int>,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Api {
        pub base_url: Option<String>,
        pub version: Option<String>,
        pub request_timeout_ms: Option<super::Int>,
        pub connect_timeout_ms: Option<super::Int>,
        pub ca_file: Option<PathBuf>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Sender {
        pub name: String,
        pub phone_number_id: String,
        pub token: Option<String>,
        pub token_env: Option<String>,
        pub token_file: Option<PathBuf>,
        pub mps: Option<super::Int>,
        pub messaging_limit: Option<super::Int>,
        pub portfolio: Option<String>,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Dispatch {
        pub max_in_flight: Option<super::Int>,
        pub global_mps: Option<super::Int>,
        pub retry_min_ms: Option<super::Int>,
        pub retry_max_ms: Option<super::Int>,
        pub max_attempts: Option<super::Int>,
        pub max_age_s: Option<super::Int>,
        pub window_margin_s: Option<super::Int>,
        pub pair_interval_ms: Option<super::Int>,
        pub pair_burst: Option<super::Int>,
        pub on_restart_sending: Option<String>,
        pub retention_s: Option<super::Int>,
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
        pub max_body_bytes: Option<super::Int>,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Store {
        pub cache_capacity_mb: Option<super::Int>,
        pub flush_every_ms: Option<super::Int>,
    }
}

/// An integer key. Read with `deserialize_any`, so that it sees the value as written: the
/// `config` crate's `deserialize_i64` would take `true` as 1, round `80.9` to 81 (and `0.4` to
/// 0, which turns some features off) and parse `"80"`. From the environment, where every value
/// is text, only an integer literal becomes an integer (`with_environment`).
#[derive(Clone, Copy)]
pub(crate) struct Int(i64);

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Int;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an integer, written without quotes or a decimal point")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Int, E> {
                Ok(Int(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Int, E> {
                i64::try_from(v)
                    .map(Int)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(v), &self))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `socket.allowed_uids` / `allowed_gids`: a TOML list of ids, or one id. From the
/// environment the text is made a list first (`env_ids`).
pub(crate) struct Ids(Vec<u32>);

impl<'de> Deserialize<'de> for Ids {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Ids;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of numeric ids such as [1000, 1001]")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Ids, E> {
                id_from_i64(v).map(|id| Ids(vec![id]))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Ids, E> {
                id_from_i64(i64::try_from(v).unwrap_or(-1)).map(|id| Ids(vec![id]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Ids, A::Error> {
                let mut ids = Vec::new();
                while let Some(Id(id)) = seq.next_element()? {
                    ids.push(id);
                }
                Ok(Ids(ids))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `socket.mode`: octal digits as text (`socket_mode` reads them). A TOML integer is refused:
/// `0o660` is the number 432 to the parser, and its decimal digits would be taken for octal
/// ones (mode 0432).
pub(crate) struct Mode(String);

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Mode;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a quoted octal string such as \"0660\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Mode, E> {
                Ok(Mode(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Mode, E> {
                Err(E::custom(format!(
                    "is a TOML integer ({v}, octal {v:o}); write the mode as a quoted octal string, e.g. mode = \"0660\""
                )))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Mode, E> {
                Err(E::custom(format!(
                    "is a TOML integer ({v}, octal {v:o}); write the mode as a quoted octal string, e.g. mode = \"0660\""
                )))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// One element of an `Ids` list: an integer.
struct Id(u32);

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Id;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a numeric uid or gid")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Id, E> {
                id_from_i64(v).map(Id)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Id, E> {
                id_from_i64(i64::try_from(v).unwrap_or(-1)).map(Id)
            }
        }
        d.deserialize_any(Visitor)
    }
}

fn id_from_i64<E: serde::de::Error>(v: i64) -> Result<u32, E> {
    u32::try_from(v).map_err(|_| E::custom(format!("`{v}` is not a uid or gid (0 to 4294967295)")))
}

/// A configuration error: which key, and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
    /// The other keys a check across keys looked at: an environment override of one of them
    /// is named with the error, as it may be what the key clashes with or requires.
    pub related: &'static [&'static str],
}

fn err(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        message: message.into(),
        related: &[],
    }
}

/// An error of `key` found by looking at the `related` keys too.
fn err_across(
    key: impl Into<String>,
    related: &'static [&'static str],
    message: impl Into<String>,
) -> ConfigError {
    ConfigError {
        related,
        ..err(key, message)
    }
}

pub const DEFAULT_SOCKET_PATH: &str = "/run/waq/waq.sock";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/waq";
/// sled's page cache. Its resident memory is about twice this: at 16 a daemon holding 1.2
/// million queued messages reached 251-261 MiB, at 8 228-230 MiB, with enqueue and dispatch
/// at depth still within a few percent of the empty figures (docs/PERFORMANCE.md).
pub const DEFAULT_CACHE_MB: u64 = 8;

/// What `log.level` may be made of. A directive without one of these (`loud`) is, to
/// tracing, a target name: it would enable nothing the daemon logs and silence it.
const LOG_LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Environment variables that override keys: `WAQ__SECTION__KEY`, matched as the `config`
/// crate matches them (case-insensitively).
const ENV_PREFIX: &str = "waq__";
const ENV_SEPARATOR: &str = "__";

/// The sections of the file an override can address (`[[senders]]` cannot be), each with a key
/// of it for the examples in messages.
const SECTIONS: [(&str, &str); 6] = [
    ("log", "LEVEL"),
    ("socket", "PATH"),
    ("api", "VERSION"),
    ("dispatch", "MAX_IN_FLIGHT"),
    ("webhook", "LISTEN"),
    ("store", "CACHE_CAPACITY_MB"),
];

/// The project's `WAQ_` variables (one underscore) that are not overrides: the client
/// commands' socket, the simulator's address in the README's try-out and its
/// `WAQ_SIM__SECTION__KEY` overrides (`SIM_OVERRIDE_PREFIX`), the try-out's other shell
/// variables, the demo's secrets, and the test suite's knobs. `waq serve` warns of any other.
const OTHER_WAQ_VARS: [&str; 14] = [
    "WAQ_SOCKET",
    "WAQ_SIM",
    "WAQ_DIR",
    "WAQ_WEBHOOK",
    "WAQ_DEMO_ACCESS_TOKEN",
    "WAQ_DEMO_APP_SECRET",
    "WAQ_BAD_INPUT_COUNT",
    "WAQ_CRASH_LOOPS",
    "WAQ_FAULTS_MESSAGES",
    "WAQ_FAULTS_MPS_SLACK",
    "WAQ_FAULTS_OUTAGE_MS",
    "WAQ_META_OPENAPI",
    "WAQ_STORE_CHILD",
    "WAQ_STORE_CHILD_DIR",
];
const SIM_OVERRIDE_PREFIX: &str = "WAQ_SIM__";

/// The longest path a Unix socket can be bound to on Linux (`sun_path` less its NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// The directory that holds the socket `path`.
pub fn socket_dir(path: &Path) -> PathBuf {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => d.to_path_buf(),
        None => PathBuf::from("."),
    }
}

/// Where the daemon of process `pid` binds the socket `path` first: in a private directory
/// beside it, before renaming it into place (see `api::bind`). The pid is written with 7
/// digits (Linux's largest is 4,194,304), so whether this fits a socket's address does not
/// depend on the pid.
pub fn staged_socket_path(path: &Path, pid: u32) -> PathBuf {
    socket_dir(path).join(format!(".wb{pid:07}")).join("s")
}

/// The largest body a request may be allowed: bodies are held in memory.
const MAX_BODY_LIMIT: i64 = 1 << 30;
/// The largest budget of bodies held in memory at once: 1 TiB.
const MAX_BODY_MEMORY: i64 = 1 << 40;
/// The smallest request cap: a full 4096-character text body in 4-byte UTF-8 with 1 KiB of
/// metadata and the rest of a send request.
const MIN_REQUEST_LIMIT: i64 = 24 * 1024;

impl Config {
    /// Loads `path` with `WAQ__SECTION__KEY` overrides from the environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with_env(path, std::env::vars_os())
    }

    /// `load` with the environment given, so that tests need not change the process's.
    fn load_with_env(
        path: &Path,
        vars: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
    ) -> Result<Config, ConfigError> {
        if !path.exists() {
            return Err(err(
                "--config",
                format!(
                    "{} does not exist; pass the path of a waq config.toml",
                    path.display()
                ),
            ));
        }
        // The `config` crate would say a directory is "not found".
        if path.is_dir() {
            return Err(err(
                "--config",
                format!(
                    "{} is a directory; pass the path of a waq config.toml",
                    path.display()
                ),
            ));
        }
        let mut overrides = Vec::new();
        for (name, value) in vars {
            // A name that is not Unicode cannot be one of ours.
            let Some(name) = name.to_str() else { continue };
            if !name.to_lowercase().starts_with(ENV_PREFIX) {
                continue;
            }
            let value = value
                .into_string()
                .map_err(|_| err(name, "the environment variable's value is not UTF-8"))?;
            overrides.push((name.to_string(), value));
        }
        overrides.sort();
        // `WAQ__SENDERS__0__MPS` would make `senders` a table, which reads as a type error.
        if let Some((name, _)) = overrides.iter().find(|(n, _)| {
            let key = env_key(n);
            key == "senders" || key.starts_with("senders.")
        }) {
            return Err(err(
                env_key(name),
                format!(
                    "[[senders]] cannot be set from the environment (the environment variable {name}); \
                     write the senders in the file: a sender's token can come from the environment through its token_env"
                ),
            ));
        }

        // Read here rather than by the `config` crate, which takes a pipe (`--config
        // <(…)`, `/dev/stdin`) for a file that is "not found".
        // One open: whether it is a regular file is asked of what was read, not of whatever
        // the path names a moment later (an editor that replaces the file).
        let cannot_read =
            |e: std::io::Error| err("--config", format!("cannot read {}: {e}", path.display()));
        let mut opened = std::fs::File::open(path).map_err(cannot_read)?;
        let regular = opened.metadata().is_ok_and(|m| m.is_file());
        let mut text = String::new();
        std::io::Read::read_to_string(&mut opened, &mut text).map_err(cannot_read)?;
        let file_origin = path.display().to_string();
        if let Some(e) = number_out_of_range(&text, &file_origin) {
            return Err(e);
        }
        let file = config::File::from_str(&text, config::FileFormat::Toml);
        // The file alone first, then each variable over it: an error names where the bad value
        // was written, the file or the variable.
        deserialize(
            config::Config::builder().add_source(file.clone()),
            &file_origin,
        )?;
        for one in &overrides {
            deserialize(
                with_environment(
                    config::Config::builder().add_source(file.clone()),
                    std::slice::from_ref(one),
                )?,
                &format!("the environment variable {}", one.0),
            )?;
        }
        let raw = deserialize(
            with_environment(config::Config::builder().add_source(file), &overrides)?,
            "the environment",
        )?;
        // Relative paths are the file's neighbours; a pipe has none, so for one they are the
        // working directory's, as a shell user means them.
        // (Kept relative when `--config` is: an absolute socket path could outgrow the 107
        // bytes a Unix socket's address holds.)
        let base = match regular {
            true => path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
            false => PathBuf::from("."),
        };
        Config::from_raw(raw, &base).map_err(|mut e| {
            // A check across keys (a secret that `listen` requires, a cap that must cover
            // another) may fail for a key the file never set: the overrides of the keys it
            // looked at are named too, as they may be what the key clashes with or requires.
            let related: Vec<&str> = overrides
                .iter()
                .filter(|(n, _)| e.related.contains(&env_key(n).as_str()))
                .map(|(n, _)| n.as_str())
                .collect();
            e.message = match overrides.iter().find(|(n, _)| env_key(n) == e.key) {
                Some((name, _)) => {
                    let others: Vec<&str> = related.iter().copied().filter(|n| n != name).collect();
                    match others.is_empty() {
                        true => format!("{} (set by the environment variable {name})", e.message),
                        false => format!(
                            "{} (set by the environment variable {name}, with {} from the environment)",
                            e.message,
                            others.join(", ")
                        ),
                    }
                }
                None if !related.is_empty() => format!(
                    "{} (in {file_origin}, with {} from the environment)",
                    e.message,
                    related.join(", ")
                ),
                None => format!("{} (in {file_origin})", e.message),
            };
            e
        })
    }

    /// Parses TOML text (no environment overrides); relative file paths resolve against `base`.
    pub fn from_toml(text: &str, base: &Path) -> Result<Config, ConfigError> {
        let raw = deserialize(
            config::Config::builder()
                .add_source(config::File::from_str(text, config::FileFormat::Toml)),
            "config",
        )?;
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
        check_log_level(&log.level)?;

        let mode_text = raw.socket.mode.map_or_else(|| "0660".into(), |m| m.0);
        let mode = socket_mode(&mode_text).map_err(|why| err("socket.mode", why))?;
        let socket_path = raw
            .socket
            .path
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET_PATH));
        if socket_path.as_os_str().is_empty() {
            return Err(err("socket.path", "is empty"));
        }
        // Relative paths are the config file's neighbours, as `*_file` keys are: not wherever
        // the daemon was started from (`/` under systemd).
        let socket_path = beside(base, &socket_path);
        // A Unix socket's address holds at most 107 bytes of path (108 with the NUL).
        let path_len = socket_path.as_os_str().len();
        if path_len > MAX_SOCKET_PATH {
            return Err(err(
                "socket.path",
                format!(
                    "is {path_len} bytes long; a Unix socket's path can be at most {MAX_SOCKET_PATH}: choose a shorter one"
                ),
            ));
        }
        let staged = staged_socket_path(&socket_path, 0);
        let staged_len = staged.as_os_str().len();
        if staged_len > MAX_SOCKET_PATH {
            return Err(err(
                "socket.path",
                format!(
                    "is bound first as {} (a private directory beside it, then renamed into \
                     place), {staged_len} bytes long; a Unix socket's path can be at most \
                     {MAX_SOCKET_PATH}: choose a shorter directory (at most {} bytes)",
                    staged.display(),
                    MAX_SOCKET_PATH - (staged_len - socket_dir(&socket_path).as_os_str().len())
                ),
            ));
        }
        // A single send with a 4096-character text body (4 bytes a character in UTF-8) and
        // 1 KiB of metadata must fit.
        let max_request_bytes = within(
            "socket.max_request_bytes",
            raw.socket.max_request_bytes,
            32 * 1024,
            MIN_REQUEST_LIMIT..=MAX_BODY_LIMIT,
        )?;
        let max_batch_bytes = within(
            "socket.max_batch_bytes",
            raw.socket.max_batch_bytes,
            32 * 1024 * 1024,
            MIN_REQUEST_LIMIT..=MAX_BODY_LIMIT,
        )?;
        if max_batch_bytes < max_request_bytes {
            return Err(err_across(
                "socket.max_batch_bytes",
                &["socket.max_request_bytes"],
                format!(
                    "must be at least socket.max_request_bytes ({max_batch_bytes} < \
                     {max_request_bytes}): a batch of one must fit"
                ),
            ));
        }
        // By default room for at least one of the largest batches at its full count; set, at
        // least one batch body, so that every body fits (a larger count takes the whole budget).
        // Both at most 2^30 here: no overflow.
        let batch_charge = max_batch_bytes as i64 * crate::api::budget::BATCH_FACTOR as i64;
        let max_body_memory_bytes = within(
            "socket.max_body_memory_bytes",
            raw.socket.max_body_memory_bytes,
            (256_i64 << 20).max(batch_charge),
            MIN_REQUEST_LIMIT..=MAX_BODY_MEMORY,
        )?;
        if max_body_memory_bytes < max_batch_bytes {
            return Err(err_across(
                "socket.max_body_memory_bytes",
                &["socket.max_batch_bytes"],
                format!(
                    "must be at least socket.max_batch_bytes ({max_body_memory_bytes} < \
                     {max_batch_bytes}): the largest batch body must fit"
                ),
            ));
        }
        let allowed_uids = raw.socket.allowed_uids.map(|ids| ids.0);
        let allowed_gids = raw.socket.allowed_gids.map(|ids| ids.0);
        // An empty list would refuse every peer, and nothing would say why but each 403. The
        // usual way to clear a value with systemd, an empty `Environment=` line, gives one.
        for (key, ids) in [
            ("socket.allowed_uids", &allowed_uids),
            ("socket.allowed_gids", &allowed_gids),
        ] {
            if ids.as_ref().is_some_and(Vec::is_empty) {
                return Err(err(
                    key,
                    "is empty, which would refuse every peer; list at least one id, or leave the \
                     key out to let the socket file's mode alone decide who may connect",
                ));
            }
        }
        let socket = SocketConfig {
            path: socket_path,
            mode,
            allowed_uids,
            allowed_gids,
            max_connections: within(
                "socket.max_connections",
                raw.socket.max_connections,
                1024,
                1..=100_000,
            )? as usize,
            max_request_bytes: max_request_bytes as usize,
            max_batch_bytes: max_batch_bytes as usize,
            max_body_memory_bytes: max_body_memory_bytes as usize,
        };

        let base_url = raw
            .api
            .base_url
            .unwrap_or_else(|| "https://graph.facebook.com".into());
        let version = raw.api.version.unwrap_or_else(|| "v25.0".into());
        if !crate::cloud::is_graph_version(&version) {
            return Err(err(
                "api.version",
                format!(
                    "`{version}` is not a Graph API version: write it as v<major>.<minor>, \
                     such as \"v25.0\""
                ),
            ));
        }
        crate::cloud::check_endpoint(&base_url, &version).map_err(|e| err(e.key, e.message))?;
        let api = ApiConfig {
            base_url: base_url.trim_end_matches('/').to_string(),
            version,
            request_timeout: Duration::from_millis(within(
                "api.request_timeout_ms",
                raw.api.request_timeout_ms,
                15_000,
                100..=600_000,
            )?),
            connect_timeout: Duration::from_millis(within(
                "api.connect_timeout_ms",
                raw.api.connect_timeout_ms,
                5_000,
                100..=600_000,
            )?),
            extra_roots_pem: raw
                .api
                .ca_file
                .map(|p| read_certificates("api.ca_file", &secret_file("api.ca_file", &p, base)?))
                .transpose()?,
        };

        if raw.senders.is_empty() {
            return Err(err(
                "senders",
                "no [[senders]] configured; add one per business phone number",
            ));
        }
        let secret_vars: Vec<String> = raw
            .senders
            .iter()
            .filter_map(|s| s.token_env.clone())
            .chain(raw.webhook.iter().flat_map(|w| {
                [w.app_secret_env.clone(), w.verify_token_env.clone()]
                    .into_iter()
                    .flatten()
            }))
            .collect();
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
            // Two senders on one number would each send at the rate Meta allows the number,
            // and a webhook for it could not tell which sender it is for.
            if let Some(other) = senders
                .iter()
                .find(|o: &&SenderConfig| o.phone_number_id == s.phone_number_id)
            {
                return Err(err(
                    key("phone_number_id"),
                    format!(
                        "`{}` is already the number of sender `{}`; give each number one [[senders]] block",
                        s.phone_number_id, other.name
                    ),
                ));
            }
            let token = secret(
                &key("token"),
                s.token,
                s.token_env,
                s.token_file
                    .map(|p| secret_file(&key("token_file"), &p, base))
                    .transpose()?,
                SecretUse::Header,
            )?
            .ok_or_else(|| err(key("token"), "set token_env, token_file or token"))?;
            let mps = within(&key("mps"), s.mps, 80, 1..=10_000)? as u32;
            let messaging_limit = s
                .messaging_limit
                .map(|v| within(&key("messaging_limit"), Some(v), 0, 1..=100_000_000))
                .transpose()?
                .map(|v| v as u32);
            let portfolio = match s.portfolio {
                Some(p) if p.is_empty() || p.contains('\0') => {
                    return Err(err(
                        key("portfolio"),
                        "must be a name (not empty, no NUL character)",
                    ))
                }
                Some(p) => p,
                None => s.name.clone(),
            };
            // Meta counts the limit per portfolio: its numbers share one count and one limit.
            if let Some(other) = senders.iter().find(|o: &&SenderConfig| {
                o.portfolio == portfolio && o.messaging_limit != messaging_limit
            }) {
                return Err(err(
                    key("messaging_limit"),
                    format!(
                        "sender `{}` of portfolio `{portfolio}` has messaging_limit {}; the senders of one portfolio share one limit, so give them the same",
                        other.name,
                        other
                            .messaging_limit
                            .map_or("unset".to_string(), |l| l.to_string())
                    ),
                ));
            }
            senders.push(SenderConfig {
                name: s.name,
                phone_number_id: s.phone_number_id,
                token,
                mps,
                messaging_limit,
                portfolio,
            });
        }

        let d = raw.dispatch;
        let day_ms = 86_400_000;
        let retry_min = within("dispatch.retry_min_ms", d.retry_min_ms, 1_000, 1..=day_ms)?;
        let retry_max = within("dispatch.retry_max_ms", d.retry_max_ms, 300_000, 1..=day_ms)?;
        if retry_max < retry_min {
            return Err(err_across(
                "dispatch.retry_max_ms",
                &["dispatch.retry_min_ms"],
                format!("must be at least dispatch.retry_min_ms ({retry_max} < {retry_min})"),
            ));
        }
        let on_restart_sending = match d.on_restart_sending.as_deref() {
            None | Some("resend") => RestartPolicy::Resend,
            Some("fail") => RestartPolicy::Fail,
            Some(other) => {
                return Err(err(
                    "dispatch.on_restart_sending",
                    format!("`{other}` is not a policy; use \"resend\" or \"fail\""),
                ))
            }
        };
        let dispatch = DispatchConfig {
            max_in_flight: within("dispatch.max_in_flight", d.max_in_flight, 512, 1..=100_000)?
                as usize,
            // Absent is no cap.
            global_mps: d
                .global_mps
                .map(|v| within("dispatch.global_mps", Some(v), 0, 1..=1_000_000))
                .transpose()?
                .map(|n| n as u32),
            retry_min: Duration::from_millis(retry_min),
            retry_max: Duration::from_millis(retry_max),
            max_attempts: within("dispatch.max_attempts", d.max_attempts, 10, 1..=1_000_000)?
                as u32,
            max_age: Duration::from_secs(within(
                "dispatch.max_age_s",
                d.max_age_s,
                86_400,
                1..=365 * 86_400,
            )?),
            // A margin of the whole 24 hours would close every window: every free-form
            // message refused.
            window_margin: Duration::from_secs(within(
                "dispatch.window_margin_s",
                d.window_margin_s,
                60,
                0..=86_399,
            )?),
            pair_interval: Duration::from_millis(within(
                "dispatch.pair_interval_ms",
                d.pair_interval_ms,
                6_000,
                1..=day_ms,
            )?),
            pair_burst: within("dispatch.pair_burst", d.pair_burst, 45, 1..=100_000)? as u32,
            on_restart_sending,
            retention: Duration::from_secs(within(
                "dispatch.retention_s",
                d.retention_s,
                7 * 86_400,
                1..=3650 * 86_400,
            )?),
        };

        let webhook = match raw.webhook {
            None => None,
            Some(w) => {
                // Checked with or without `listen`: a section kept for later is still right.
                let path = w.path.unwrap_or_else(|| "/webhook".into());
                if !path.starts_with('/') {
                    return Err(err("webhook.path", "must start with `/`"));
                }
                if let Some(url) = &w.forward_url {
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        return Err(err("webhook.forward_url", "must be an http(s) URL"));
                    }
                    // Every payload would fail to relay, forever. The URL is not repeated: it
                    // may hold a password.
                    match reqwest::Url::parse(url) {
                        Ok(u) if u.host_str().is_some_and(|h| !h.is_empty()) => {}
                        Ok(_) => return Err(err("webhook.forward_url", "has no host")),
                        Err(e) => {
                            return Err(err(
                                "webhook.forward_url",
                                format!("is not a usable URL: {e}"),
                            ))
                        }
                    }
                }
                // Below a few KiB even one status update from Meta would be refused.
                let max_body_bytes = within(
                    "webhook.max_body_bytes",
                    w.max_body_bytes,
                    3 * 1024 * 1024,
                    16 * 1024..=MAX_BODY_LIMIT,
                )? as usize;
                match w.listen {
                    // No listener: its secrets are not needed, so not looked up.
                    None => None,
                    Some(listen) => {
                        let Ok(addr) = listen.parse::<std::net::SocketAddr>() else {
                            return Err(err(
                                "webhook.listen",
                                format!("`{listen}` is not an address such as \"127.0.0.1:8080\""),
                            ));
                        };
                        if w.forward_url
                            .as_deref()
                            .is_some_and(|url| leads_to_listener(url, addr, &path))
                        {
                            return Err(err_across(
                                "webhook.forward_url",
                                &["webhook.listen", "webhook.path"],
                                "leads back to this daemon's own webhook listener, which would \
                                 relay every payload to itself forever: point it at the \
                                 application that wants the payloads",
                            ));
                        }
                        let app_secret = secret(
                            "webhook.app_secret",
                            w.app_secret,
                            w.app_secret_env,
                            w.app_secret_file
                                .map(|p| secret_file("webhook.app_secret_file", &p, base))
                                .transpose()?,
                            SecretUse::Compared,
                        )?
                        .ok_or_else(|| {
                            err_across(
                                "webhook.app_secret",
                                &["webhook.listen"],
                                "required when webhook.listen is set: set app_secret_env or app_secret_file",
                            )
                        })?;
                        let verify_token = secret(
                            "webhook.verify_token",
                            w.verify_token,
                            w.verify_token_env,
                            w.verify_token_file
                                .map(|p| secret_file("webhook.verify_token_file", &p, base))
                                .transpose()?,
                            SecretUse::Compared,
                        )?
                        .unwrap_or_default();
                        Some(WebhookConfig {
                            listen,
                            path,
                            app_secret,
                            verify_token,
                            forward_url: w.forward_url,
                            max_body_bytes,
                        })
                    }
                }
            }
        };

        let store = StoreConfig {
            // sled panics below 256 bytes; a MiB is the unit, so at least 1.
            cache_capacity_bytes: within(
                "store.cache_capacity_mb",
                raw.store.cache_capacity_mb,
                DEFAULT_CACHE_MB as i64,
                1..=1 << 20,
            )? * 1024
                * 1024,
            flush_every_ms: match within(
                "store.flush_every_ms",
                raw.store.flush_every_ms,
                500,
                0..=60_000,
            )? {
                0 => None,
                ms => Some(ms),
            },
        };

        let state_dir = raw
            .state_dir
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        if state_dir.as_os_str().is_empty() {
            return Err(err("state_dir", "is empty"));
        }
        let state_dir = beside(base, &state_dir);
        Ok(Config {
            state_dir,
            log,
            socket,
            api,
            senders,
            dispatch,
            webhook,
            store,
            secret_vars,
        })
    }

    /// Values that are allowed but likely to hurt, each a message naming its key: `waq serve`
    /// logs them as warnings at start and on reload.
    pub fn cautions(&self) -> Vec<String> {
        let mut out = Vec::new();
        // A restart rebuilds each recipient's pair budget from the requests answered in the
        // last 2 × pair_interval × pair_burst (`dispatch/pair.rs`); a finished message removed
        // sooner is missing from it, and the recipient can get a burst Meta refuses (131056,
        // retried). Warned of, not refused: a short retention can be a deliberate choice (less
        // data kept), and with a long pair interval the span can pass the longest retention.
        let d = &self.dispatch;
        let span_ms = (d.pair_interval.as_millis() as u64)
            .saturating_mul(u64::from(d.pair_burst))
            .saturating_mul(2);
        let needed_s = span_ms.div_ceil(1000);
        if d.retention.as_secs() < needed_s {
            out.push(format!(
                "dispatch.retention_s is {}, below twice dispatch.pair_interval_ms × \
                 dispatch.pair_burst ({needed_s} s): a restart rebuilds each recipient's pair \
                 budget from the messages sent in that span, and those removed sooner are \
                 missing from it, so a recipient can get more than Meta's pair limit allows \
                 (131056, retried); keep it at {needed_s} or more",
                d.retention.as_secs()
            ));
        }
        out
    }

    pub fn sender(&self, name: &str) -> Option<&SenderConfig> {
        self.senders.iter().find(|s| s.name == name)
    }

    pub fn sender_names(&self) -> Vec<String> {
        self.senders.iter().map(|s| s.name.clone()).collect()
    }
}

/// Keys whose `WAQ__…` value stays text, as written: `0660` is octal digits, not the number
/// 660, and a verify token or a version of digits is not a number either (`0123` would lose its
/// zero; a long one would become a float).
const TEXT_KEYS: [&str; 18] = [
    "state_dir",
    "log.level",
    "log.format",
    "socket.path",
    "socket.mode",
    "api.base_url",
    "api.version",
    "api.ca_file",
    "dispatch.on_restart_sending",
    "webhook.listen",
    "webhook.path",
    "webhook.app_secret",
    "webhook.app_secret_env",
    "webhook.app_secret_file",
    "webhook.verify_token",
    "webhook.verify_token_env",
    "webhook.verify_token_file",
    "webhook.forward_url",
];

/// Keys whose `WAQ__…` value is a list of ids: one id, `1000,1001` or `[1000, 1001]`.
const ID_LIST_KEYS: [&str; 2] = ["socket.allowed_uids", "socket.allowed_gids"];

/// `builder` with the `WAQ__…` overrides over it. A value that is an integer literal becomes
/// an integer, `true` / `false` a boolean and a decimal a float, as TOML would write them, so
/// that a key of another type refuses them; but `TEXT_KEYS` stay text and `ID_LIST_KEYS`
/// become lists.
fn with_environment(
    builder: config::ConfigBuilder<config::builder::DefaultState>,
    vars: &[(String, String)],
) -> Result<config::ConfigBuilder<config::builder::DefaultState>, ConfigError> {
    let mut builder = builder;
    let mut typed = Vec::new();
    for (name, value) in vars {
        let key = env_key(name);
        let origin = || format!("the environment variable {name}");
        if TEXT_KEYS.contains(&key.as_str()) {
            builder = builder
                .set_override(&key, value.as_str())
                .map_err(|e| from_crate(e, &origin()))?;
        } else if ID_LIST_KEYS.contains(&key.as_str()) {
            let ids = env_ids(value).map_err(|m| err(&key, format!("{m} (in {})", origin())))?;
            builder = builder
                .set_override(&key, ids)
                .map_err(|e| from_crate(e, &origin()))?;
        } else {
            // Digits past 64 bits would be read as a float and refused as one.
            let digits = value.strip_prefix(['-', '+']).unwrap_or(value);
            if !digits.is_empty()
                && digits.bytes().all(|b| b.is_ascii_digit())
                && value.parse::<i64>().is_err()
            {
                let bound = match value.starts_with('-') {
                    true => format!("the smallest integer is {}", i64::MIN),
                    false => format!("the largest integer is {}", i64::MAX),
                };
                let message = format!("`{value}` is out of range: {bound} (in {})", origin());
                return Err(err(&key, message));
            }
            typed.push((name.clone(), value.clone()));
        }
    }
    // Overrides win over sources whatever the order they were added in.
    Ok(builder.add_source(
        config::Environment::with_prefix("WAQ")
            .prefix_separator(ENV_SEPARATOR)
            .separator(ENV_SEPARATOR)
            .try_parsing(true)
            .source(Some(typed.into_iter().collect())),
    ))
}

/// A list of ids as an environment variable writes it: `1000`, `1000,1001` or `[1000, 1001]`;
/// empty text is the empty list.
fn env_ids(value: &str) -> Result<Vec<i64>, String> {
    let t = value.trim();
    let t = t
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(t);
    t.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<u32>()
                .map(i64::from)
                .map_err(|_| format!("`{s}` is not a uid or gid (0 to 4294967295)"))
        })
        .collect()
}

/// The key a `WAQ__SECTION__KEY` variable sets: `section.key`.
fn env_key(name: &str) -> String {
    name.to_lowercase()
        .get(ENV_PREFIX.len()..)
        .unwrap_or("")
        .replace(ENV_SEPARATOR, ".")
}

/// Warnings for the `WAQ_…` variables (one underscore after WAQ) in `vars` that are neither
/// the project's other variables nor named by `cfg`'s `*_env` keys: most likely a misspelt
/// `WAQ__SECTION__KEY`, which the daemon would otherwise ignore without a word.
pub fn misspelt_overrides(
    cfg: &Config,
    vars: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> Vec<String> {
    let mut names: Vec<String> = vars
        .into_iter()
        .filter_map(|(name, _)| name.into_string().ok())
        .filter(|name| {
            let lower = name.to_lowercase();
            lower.starts_with("waq_") && !lower.starts_with(ENV_PREFIX)
        })
        .filter(|name| {
            let upper = name.to_uppercase();
            !OTHER_WAQ_VARS.contains(&upper.as_str())
                && !upper.starts_with(SIM_OVERRIDE_PREFIX)
                && !cfg.secret_vars.iter().any(|v| v == name)
        })
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let hint = match override_meant(&name) {
                Some(meant) => format!("; was {meant} meant?"),
                None => " (such as WAQ__DISPATCH__MAX_IN_FLIGHT)".into(),
            };
            format!(
                "the environment variable {name} is not read: overrides are spelled \
                 WAQ__SECTION__KEY, with two underscores after WAQ and between the parts{hint}"
            )
        })
        .collect()
}

/// The override a `WAQ_…` name was likely meant as: `WAQ_DISPATCH_MAX_IN_FLIGHT` →
/// `WAQ__DISPATCH__MAX_IN_FLIGHT`, when it starts with `state_dir` or a section and a key.
fn override_meant(name: &str) -> Option<String> {
    let rest = name.get("WAQ_".len()..)?.to_uppercase();
    if rest == "STATE_DIR" {
        return Some("WAQ__STATE_DIR".into());
    }
    SECTIONS.iter().find_map(|(section, _)| {
        let section = section.to_uppercase();
        let key = rest.strip_prefix(&section)?.strip_prefix('_')?;
        let key = key.trim_start_matches('_');
        (!key.is_empty()).then(|| format!("WAQ__{section}__{key}"))
    })
}

/// A number in the file that TOML reads but a 64-bit value cannot hold, named by its key: the
/// `config` crate refuses it without saying which (`number too large to fit in target type`).
fn number_out_of_range(text: &str, origin: &str) -> Option<ConfigError> {
    use toml::de::{DeTable, DeValue};
    fn walk(value: &DeValue<'_>, key: &str, origin: &str) -> Option<ConfigError> {
        match value {
            DeValue::Integer(n) if i64::from_str_radix(n.as_str(), n.radix()).is_err() => {
                let prefix = match n.radix() {
                    16 => "0x",
                    8 => "0o",
                    2 => "0b",
                    _ => "",
                };
                let bound = match n.as_str().starts_with('-') {
                    true => format!("the smallest integer is {}", i64::MIN),
                    false => format!("the largest integer is {}", i64::MAX),
                };
                Some(err(
                    key,
                    format!(
                        "`{prefix}{}` is out of range: {bound} (in {origin})",
                        n.as_str()
                    ),
                ))
            }
            DeValue::Float(f)
                if f.as_str().parse::<f64>().is_ok_and(f64::is_infinite)
                    && !f.as_str().contains("inf") =>
            {
                Some(err(
                    key,
                    format!("`{}` is out of range (in {origin})", f.as_str()),
                ))
            }
            DeValue::Table(table) => table.iter().find_map(|(k, v)| {
                let key = match key.is_empty() {
                    true => k.get_ref().to_string(),
                    false => format!("{key}.{}", k.get_ref()),
                };
                walk(v.get_ref(), &key, origin)
            }),
            DeValue::Array(items) => items
                .iter()
                .enumerate()
                .find_map(|(i, v)| walk(v.get_ref(), &format!("{key}[{i}]"), origin)),
            _ => None,
        }
    }
    // A file TOML cannot parse is left to the `config` crate, whose error says where.
    let table = DeTable::parse(text).ok()?;
    walk(&DeValue::Table(table.into_inner()), "", origin)
}

/// Builds and deserializes; an error names the key and `origin`, where the value came from.
fn deserialize(
    builder: config::ConfigBuilder<config::builder::DefaultState>,
    origin: &str,
) -> Result<raw::Root, ConfigError> {
    builder
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| from_crate(e, origin))
}

/// The `config` crate's error as ours. Its key is taken apart (it writes `senders[0]mps`),
/// and an unknown field is named as the key it would be.
pub(crate) fn from_crate(e: config::ConfigError, origin: &str) -> ConfigError {
    use config::ConfigError as E;
    let (key, message) = match e {
        E::Type {
            unexpected,
            expected,
            key,
            ..
        } => (
            key,
            format!("invalid type: {unexpected}, expected {expected}"),
        ),
        E::At { error, key, .. } => (key, error.to_string()),
        E::NotFound(key) => (Some(key), "is required".to_string()),
        E::FileParse { cause, .. } => (None, without_source_lines(&cause.to_string())),
        other => (None, other.to_string()),
    };
    let mut key = key.map(|k| dotted(&k)).filter(|k| !k.is_empty());
    let from_env = origin.starts_with("the environment variable");
    // serde names the type it wanted (`expected struct Api`), which says nothing to a user.
    let section = SECTIONS
        .iter()
        .find(|(name, _)| key.as_deref() == Some(name));
    let message = match section {
        Some((name, example)) if message.contains("expected struct") => {
            let upper = name.to_uppercase();
            match from_env {
                true => format!(
                    "is a section, not a key: set its keys one by one as \
                     WAQ__{upper}__KEY, such as WAQ__{upper}__{example}"
                ),
                false => format!("is a section, not a key: write its keys under [{name}]"),
            }
        }
        // `WAQ__STATE_DIR__X`, `WAQ__API__VERSION__X`: a key addressed as a section.
        _ if from_env && message.starts_with("invalid type: map") => match &key {
            Some(k) => format!(
                "is a key, not a section: set it as WAQ__{}",
                k.to_uppercase().replace('.', ENV_SEPARATOR)
            ),
            None => message,
        },
        _ => message,
    };
    if let Some(field) = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next())
    {
        key = Some(match key {
            Some(k) => format!("{k}.{field}"),
            None => field.to_string(),
        });
    }
    match key {
        Some(key) => err(key, format!("{message} (in {origin})")),
        None => err(origin, message),
    }
}

/// A TOML parse error without the lines it quotes from the file: the line at fault may hold an
/// inline secret, and its number and column say where it is.
/// `TOML parse error at line 9, column 9 | 9 | token = "… | ^ | invalid basic string`
/// → `TOML parse error at line 9, column 9: invalid basic string`.
fn without_source_lines(message: &str) -> String {
    let quoted = |line: &str| {
        let rest = line
            .trim_start()
            .trim_start_matches(|c: char| c.is_ascii_digit());
        rest.trim_start().starts_with('|')
    };
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !quoted(l))
        .collect::<Vec<_>>()
        .join(": ")
}

/// `senders[0]mps` → `senders[0].mps`.
fn dotted(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 2);
    let mut chars = key.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == ']' && chars.peek().is_some_and(|n| *n != '[' && *n != '.') {
            out.push('.');
        }
    }
    out
}

/// `log.level` is a level, or tracing filter directives such as `waq=debug,info`; each
/// directive must end in a level.
fn check_log_level(level: &str) -> Result<(), ConfigError> {
    let refuse = |why: String| {
        err(
            "log.level",
            format!(
                "{why}; use one of {}, or directives such as \"waq=debug,info\"",
                LOG_LEVELS.join(", ")
            ),
        )
    };
    let mut directives = level.split(',').map(str::trim).filter(|d| !d.is_empty());
    if directives.clone().next().is_none() {
        return Err(refuse("is empty".into()));
    }
    if let Some(bad) = directives.find(|d| {
        let named = d.rsplit_once('=').map_or(*d, |(_, l)| l).trim();
        !LOG_LEVELS.iter().any(|l| l.eq_ignore_ascii_case(named))
    }) {
        return Err(refuse(format!(
            "`{bad}` is not a level or a `target=level` directive"
        )));
    }
    tracing_subscriber::EnvFilter::try_new(level)
        .map(|_| ())
        .map_err(|e| refuse(format!("`{level}` is not a valid filter ({e})")))
}

/// `socket.mode`: octal digits alone, as chmod takes them (`0660`, `660`), whether from the
/// file or the environment. The file must quote them (see `Mode`); a `0o` prefix is refused
/// from both, as the file refuses the unquoted `0o660`, so that one spelling works everywhere.
fn socket_mode(text: &str) -> Result<u32, String> {
    let quoted = text.len() >= 2
        && ['"', '\'']
            .iter()
            .any(|q| text.starts_with(*q) && text.ends_with(*q));
    if quoted {
        // docker's --env-file keeps them as part of the value.
        return Err(format!(
            "`{text}` has quotes around it, which were taken as part of the value (as docker's \
             --env-file leaves them): write the octal digits alone, such as 0660"
        ));
    }
    if text.starts_with("0o") || text.starts_with("0O") {
        return Err(format!(
            "`{text}`: write the mode as octal digits alone, without 0o, such as \"0660\""
        ));
    }
    // `from_str_radix` would take a sign.
    if text.is_empty() || !text.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(format!(
            "`{text}` is not an octal file mode: write octal digits (0-7) such as \"0660\""
        ));
    }
    let mode = u32::from_str_radix(text, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| {
            format!(
                "`{text}` is not a file mode: it has at most four octal digits, such as \"0660\""
            )
        })?;
    // They mean nothing on a socket; a fourth digit is more likely a slip of the hand.
    if mode & 0o7000 != 0 {
        return Err(format!(
            "`{text}` sets the setuid, setgid or sticky bit (a leading 4, 2 or 1 of four digits), \
             which are not allowed on the socket: give the permission bits alone, at most \"0777\", \
             such as \"0660\""
        ));
    }
    // Connecting takes write permission on the socket file.
    if mode & 0o222 == 0 {
        return Err(format!(
            "`{text}` lets no producer connect (connecting needs write permission); \
             use \"0660\" for the socket's owner and group"
        ));
    }
    Ok(mode)
}

/// `v`, or `default` when absent; a value outside `range` is refused, the range named.
fn within(
    key: &str,
    v: Option<Int>,
    default: i64,
    range: std::ops::RangeInclusive<i64>,
) -> Result<u64, ConfigError> {
    let n = v.map_or(default, |v| v.0);
    if !range.contains(&n) {
        return Err(err(
            key,
            format!(
                "must be from {} to {} (it is {n})",
                range.start(),
                range.end()
            ),
        ));
    }
    // The ranges start at 0 or above.
    Ok(n.unsigned_abs())
}

/// What a secret is for. An access token follows `Bearer ` in a request header, so it must be
/// one word a header can carry; the webhook's secrets are only compared or used as a key.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SecretUse {
    Header,
    Compared,
}

/// Resolves a secret given inline, by environment variable name, or by file (systemd credentials).
fn secret(
    key: &str,
    inline: Option<String>,
    env: Option<String>,
    file: Option<PathBuf>,
    usage: SecretUse,
) -> Result<Option<Secret>, ConfigError> {
    let given = [inline.is_some(), env.is_some(), file.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if given > 1 {
        // The three are one key each: an environment override of either is named with it.
        let related: &'static [&'static str] = match key {
            "webhook.app_secret" => &[
                "webhook.app_secret",
                "webhook.app_secret_env",
                "webhook.app_secret_file",
            ],
            "webhook.verify_token" => &[
                "webhook.verify_token",
                "webhook.verify_token_env",
                "webhook.verify_token_file",
            ],
            _ => &[],
        };
        return Err(err_across(
            key,
            related,
            "set only one of the inline value, `_env` and `_file`",
        ));
    }
    // The key an error names, what holds the value (for the message; none when inline), what
    // an empty value is called, and the value.
    let (key, holder, empty, v) = if let Some(v) = inline {
        (key.to_string(), None, "is empty".to_string(), v)
    } else if let Some(var) = env {
        let key = format!("{key}_env");
        if var.is_empty() {
            return Err(err(
                key,
                "is empty; name the environment variable that holds the secret",
            ));
        }
        let v = std::env::var(&var).map_err(|e| {
            let why = match e {
                std::env::VarError::NotPresent => "is not set",
                std::env::VarError::NotUnicode(_) => "is not valid UTF-8",
            };
            err(&key, format!("environment variable {var} {why}"))
        })?;
        let holder = format!("environment variable {var}");
        let empty = format!("{holder} is set but empty");
        (key, Some(holder), empty, v)
    } else if let Some(path) = file {
        let key = format!("{key}_file");
        let v = std::fs::read_to_string(&path)
            .map_err(|e| err(&key, format!("cannot read {}: {e}", path.display())))?;
        let holder = path.display().to_string();
        let empty = format!("{holder} is empty");
        // A file ends in a line break as a rule; it is not part of the secret. Anything else
        // is, and is checked as a value from the environment is.
        let v = v.trim_end_matches(['\n', '\r']).to_string();
        (key, Some(holder), empty, v)
    } else {
        return Ok(None);
    };
    if v.trim().is_empty() {
        return Err(err(key, empty));
    }
    // Compared with what Meta sends (a signature's key, the verify token): a space at either
    // end is a copying accident that would fail every webhook silently.
    if usage == SecretUse::Compared && v.trim() != v {
        let has = holder.map_or_else(|| "has".to_string(), |h| format!("{h} has"));
        return Err(err(
            key,
            format!(
                "{has} white space at its start or end, which Meta's secrets and tokens do not"
            ),
        ));
    }
    if usage == SecretUse::Header {
        if let Some(why) = header_unsafe(&v) {
            let has = holder.map_or_else(|| "has".to_string(), |h| format!("{h} has"));
            return Err(err(
                key,
                format!(
                    "{has} {why}, which cannot go in an HTTP header: an access token is one word \
                     of visible ASCII characters"
                ),
            ));
        }
    }
    Ok(Some(Secret(v)))
}

/// Where systemd puts a service's `LoadCredential=` files: `/run/credentials/<unit>/`, which
/// changes with the unit's name (a renamed or instantiated unit), so a `*_file` path may start
/// with the variable instead.
const CREDENTIALS_DIRECTORY: &str = "CREDENTIALS_DIRECTORY";

/// A `*_file` path as read: `${CREDENTIALS_DIRECTORY}` or `$CREDENTIALS_DIRECTORY` at its start
/// is that variable's value, from the environment as `*_env` keys are; any other `$` at the
/// start is refused (it would be read as a file name); a relative path is `base`'s neighbour.
fn secret_file(key: &str, path: &Path, base: &Path) -> Result<PathBuf, ConfigError> {
    let Some(text) = path.to_str().filter(|t| t.starts_with('$')) else {
        return Ok(beside(base, path));
    };
    let rest = [
        format!("${{{CREDENTIALS_DIRECTORY}}}"),
        format!("${CREDENTIALS_DIRECTORY}"),
    ]
    .iter()
    .find_map(|v| text.strip_prefix(v.as_str()))
    .filter(|rest| rest.is_empty() || rest.starts_with('/'));
    let Some(rest) = rest else {
        return Err(err(
            key,
            format!(
                "`{text}`: only ${{{CREDENTIALS_DIRECTORY}}} is expanded at the start of a path \
                 (such as \"${{{CREDENTIALS_DIRECTORY}}}/wa_access_token\"); write any other path out \
                 in full"
            ),
        ));
    };
    let dir = std::env::var_os(CREDENTIALS_DIRECTORY)
        .filter(|d| !d.is_empty())
        .ok_or_else(|| {
            err(
                key,
                format!(
                    "starts with ${CREDENTIALS_DIRECTORY}, which is not set: systemd sets it for \
                     a service with LoadCredential= (run waq from such a unit, or write the \
                     credential's path out)"
                ),
            )
        })?;
    let mut full = PathBuf::from(dir);
    full.push(rest.trim_start_matches('/'));
    Ok(beside(base, &full))
}

/// A PEM file of certificate authorities: its text, once it is seen to hold at least one
/// certificate and nothing unreadable.
fn read_certificates(key: &str, path: &Path) -> Result<String, ConfigError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let text = std::fs::read_to_string(path)
        .map_err(|e| err(key, format!("cannot read {}: {e}", path.display())))?;
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(text.as_bytes()) {
        cert.map_err(|e| {
            err(
                key,
                format!("{} is not readable PEM: {e:?}", path.display()),
            )
        })?;
        count += 1;
    }
    if count == 0 {
        return Err(err(
            key,
            format!(
                "{} holds no certificate: give a PEM file of one or more \
                 `-----BEGIN CERTIFICATE-----` blocks",
                path.display()
            ),
        ));
    }
    Ok(text)
}

/// What in `token` cannot follow `Bearer ` in a header: the first character that is not
/// visible ASCII (RFC 6750's tokens never hold one), by kind and position, never the token.
fn header_unsafe(token: &str) -> Option<String> {
    let (at, c) = token
        .chars()
        .enumerate()
        .find(|(_, c)| !c.is_ascii_graphic())?;
    let what = match c {
        '\n' | '\r' => "a line break",
        ' ' => "a space",
        '\t' => "a tab",
        c if c.is_control() => "a control character",
        _ => "a non-ASCII character",
    };
    Some(format!("{what} at character {}", at + 1))
}

/// `path` relative to `base` (the config file's directory), without the `./` steps that would
/// otherwise show in every message (`././waq.sock`); an absolute path as it is.
fn beside(base: &Path, path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    // An absolute `path` replaces `out` as it is pushed.
    for step in base.components().chain(path.components()) {
        if step != std::path::Component::CurDir {
            out.push(step);
        }
    }
    match out.as_os_str().is_empty() {
        true => PathBuf::from("."),
        false => out,
    }
}

/// Whether `forward_url` names the listener at `listen` and `path` itself (by its address, a
/// loopback name for it, or any name when it listens on every address).
fn leads_to_listener(forward_url: &str, listen: std::net::SocketAddr, path: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(forward_url) else {
        return false;
    };
    if url.port_or_known_default() != Some(listen.port()) || url.path() != path {
        return false;
    }
    let loopback_name = |host: &str| {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        host == "localhost" || host.ends_with(".localhost")
    };
    let Some(host) = url.host_str() else {
        return false;
    };
    match host.trim_matches(['[', ']']).parse::<std::net::IpAddr>() {
        Ok(ip) => listen.ip() == ip || (listen.ip().is_unspecified() && ip.is_loopback()),
        Err(_) => {
            loopback_name(host) && (listen.ip().is_loopback() || listen.ip().is_unspecified())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_join_the_files_directory_without_dot_steps() {
        let at = |base: &str, p: &str| beside(Path::new(base), Path::new(p));
        assert_eq!(at(".", "./waq.sock"), PathBuf::from("waq.sock"));
        assert_eq!(at(".", "."), PathBuf::from("."));
        assert_eq!(at("/etc/waq", "./state"), PathBuf::from("/etc/waq/state"));
        assert_eq!(
            at("conf", "../run/./waq.sock"),
            PathBuf::from("conf/../run/waq.sock")
        );
        assert_eq!(
            at("/etc/waq", "/run/waq/waq.sock"),
            PathBuf::from("/run/waq/waq.sock")
        );
        assert_eq!(at("/etc/waq", "."), PathBuf::from("/etc/waq"));
        assert_eq!(at("./conf", "./waq.sock"), PathBuf::from("conf/waq.sock"));
    }

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
    fn the_senders_of_a_portfolio_share_one_messaging_limit() {
        let c = Config::from_toml(MIN, Path::new(".")).unwrap();
        assert_eq!(c.senders[0].messaging_limit, None);
        assert_eq!(c.senders[0].portfolio, c.senders[0].name);
        let second = |limit: &str| {
            format!(
                "{}{limit}\n[[senders]]\nname = \"eu\"\nphone_number_id = \"2\"\ntoken = \"t\"\nportfolio = \"acme\"\nmessaging_limit = 2000\n",
                MIN.replace("t0k3n\"", "t0k3n\"\nportfolio = \"acme\"")
            )
        };
        let c = Config::from_toml(&second("messaging_limit = 2000"), Path::new(".")).unwrap();
        assert_eq!(c.senders[1].messaging_limit, Some(2_000));
        assert_eq!(c.senders[1].portfolio, "acme");
        for (limit, key) in [
            ("messaging_limit = 250", "senders[1].messaging_limit"),
            ("", "senders[1].messaging_limit"),
            ("messaging_limit = 0", "senders[0].messaging_limit"),
        ] {
            let e = Config::from_toml(&second(limit), Path::new(".")).unwrap_err();
            assert_eq!(e.key, key, "{e}");
        }
        let e = Config::from_toml(
            &MIN.replace("t0k3n\"", "t0k3n\"\nportfolio = \"\""),
            Path::new("."),
        );
        assert_eq!(e.unwrap_err().key, "senders[0].portfolio");
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
            // Meta knows no path without the minor number, or with leading zeros.
            ("version = \"v25\"", "api.version"),
            ("version = \"v25.00\"", "api.version"),
            ("version = \"v025.0\"", "api.version"),
            ("version = \"v0.0\"", "api.version"),
            ("version = \"25.0\"", "api.version"),
            ("version = \"V25.0\"", "api.version"),
            ("version = \"v25.0.1\"", "api.version"),
        ] {
            let e =
                Config::from_toml(&format!("{MIN}\n[api]\n{api}\n"), Path::new(".")).unwrap_err();
            assert_eq!(e.key, key, "{api}: {e}");
            assert!(!e.to_string().contains("secret"), "{api}: {e}");
        }
    }

    #[test]
    fn a_version_at_the_end_of_the_base_url_is_refused_naming_api_version() {
        for (base, version) in [
            ("http://127.0.0.1:9/v25.0", "v25.0"),
            ("https://graph.facebook.com/v21.0/", "v21.0"),
            ("https://graph.facebook.com/v21.0//", "v21.0"),
            ("https://proxy.example/graph/v19.0", "v19.0"),
            ("https://graph.facebook.com/v025.00", "v025.00"),
        ] {
            let e = Config::from_toml(
                &format!("{MIN}\n[api]\nbase_url = \"{base}\"\n"),
                Path::new("."),
            )
            .unwrap_err();
            assert_eq!(e.key, "api.base_url", "{base}: {e}");
            for part in [
                format!("ends in the Graph API version {version}"),
                "belongs in api.version".to_string(),
                format!("/{version}/v25.0/"),
            ] {
                assert!(e.message.contains(&part), "{base}: {part}: {e}");
            }
        }
        // Another base path stays, as does a version-like step before the end.
        for base in [
            "https://proxy.example/graph",
            "https://proxy.example/graph/",
            "https://proxy.example/v25.0/graph",
            "https://proxy.example/v25",
            "https://proxy.example/version25.0",
            "https://graph.facebook.com",
        ] {
            let c = Config::from_toml(
                &format!("{MIN}\n[api]\nbase_url = \"{base}\"\n"),
                Path::new("."),
            )
            .unwrap_or_else(|e| panic!("{base}: {e}"));
            assert_eq!(c.api.base_url, base.trim_end_matches('/'));
        }
    }

    #[test]
    fn webhook_requires_secret() {
        let text = format!("{MIN}\n[webhook]\nlisten = \"127.0.0.1:0\"\n");
        let e = Config::from_toml(&text, Path::new(".")).unwrap_err();
        assert_eq!(e.key, "webhook.app_secret");
    }

    #[test]
    fn a_forward_url_to_the_listener_itself_is_refused() {
        let with = |listen: &str, forward: &str| {
            Config::from_toml(
                &format!(
                    "{MIN}\n[webhook]\nlisten = \"{listen}\"\napp_secret = \"s\"\n\
                     forward_url = \"{forward}\"\n"
                ),
                Path::new("."),
            )
        };
        for (listen, forward) in [
            ("127.0.0.1:8080", "http://127.0.0.1:8080/webhook"),
            ("127.0.0.1:8080", "http://localhost:8080/webhook"),
            ("127.0.0.1:80", "http://LOCALHOST./webhook"),
            ("0.0.0.0:8080", "http://127.0.0.1:8080/webhook"),
            ("0.0.0.0:8080", "https://localhost:8080/webhook?x=1"),
            ("[::1]:8080", "http://[::1]:8080/webhook"),
            ("10.0.0.5:8080", "http://10.0.0.5:8080/webhook"),
        ] {
            let e = with(listen, forward).unwrap_err();
            assert_eq!(e.key, "webhook.forward_url", "{listen} {forward}");
            assert!(e.message.contains("relay every payload to itself"), "{e}");
        }
        for (listen, forward) in [
            ("127.0.0.1:8080", "http://127.0.0.1:8081/webhook"),
            ("127.0.0.1:8080", "http://127.0.0.1:8080/hook"),
            ("127.0.0.1:8080", "http://app.internal:8080/webhook"),
            ("10.0.0.5:8080", "http://127.0.0.1:8080/webhook"),
        ] {
            assert!(with(listen, forward).is_ok(), "{listen} {forward}");
        }
    }
}

#[cfg(test)]
mod shipped_config {
    use super::*;

    /// The commented config.toml at the top of the repository parses and matches the defaults.
    #[test]
    fn shipped_config_toml_is_valid_and_shows_defaults() {
        // Its token is the unit's credential. The credentials directory is written out here
        // rather than set: the variable belongs to another test (the environment is shared).
        let creds = tempfile::tempdir().unwrap();
        std::fs::write(creds.path().join("wa_access_token"), "test-token\n").unwrap();
        let text = include_str!("../config.toml").replace(
            "\"${CREDENTIALS_DIRECTORY}/",
            &format!("\"{}/", creds.path().display()),
        );
        let c = Config::from_toml(&text, Path::new(".")).unwrap();
        assert_eq!(c.senders[0].token.expose(), "test-token");
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

#[cfg(test)]
mod bounds {
    use super::*;
    use std::ffi::OsString;

    const MIN: &str = "state_dir = \"/tmp/x\"\n[[senders]]\nname = \"main\"\nphone_number_id = \"1\"\ntoken = \"t\"\n";

    /// `MIN` with `line` added to `[section]`.
    fn with(section: &str, line: &str) -> Result<Config, ConfigError> {
        Config::from_toml(&format!("{MIN}\n[{section}]\n{line}\n"), Path::new("."))
    }

    /// `MIN` as a file, loaded with `vars` as the whole environment.
    fn load_env(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, MIN).unwrap();
        let vars = vars
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        Config::load_with_env(&path, vars)
    }

    #[test]
    fn a_zero_cache_is_refused_not_left_to_panic_in_sled() {
        let e = with("store", "cache_capacity_mb = 0").unwrap_err();
        assert_eq!(e.key, "store.cache_capacity_mb");
        assert!(e.message.contains("from 1 to"), "{e}");
        let c = with("store", "cache_capacity_mb = 1").unwrap();
        assert_eq!(c.store.cache_capacity_bytes, 1024 * 1024);
        let e = with("store", "cache_capacity_mb = 9223372036854775807").unwrap_err();
        assert_eq!(e.key, "store.cache_capacity_mb");
    }

    #[test]
    fn a_socket_path_longer_than_a_unix_address_is_refused() {
        let long = format!("/tmp/{}", "s".repeat(103));
        assert_eq!(long.len(), 108);
        let e = with("socket", &format!("path = {long:?}")).unwrap_err();
        assert_eq!(e.key, "socket.path");
        assert!(e.message.contains("108 bytes"), "{e}");
        let fits = &long[..107];
        assert_eq!(
            with("socket", &format!("path = {fits:?}"))
                .unwrap()
                .socket
                .path,
            Path::new(fits)
        );
        // The socket is bound first in a private directory beside it: a short name in a
        // long directory does not fit there, and is refused here rather than at its bind.
        let dir = |len: usize| format!("/{}", "d".repeat(len - 1));
        let short_name = format!("{}/w.sock", dir(95));
        assert!(short_name.len() <= 107);
        let e = with("socket", &format!("path = {short_name:?}")).unwrap_err();
        assert_eq!(e.key, "socket.path");
        assert!(e.message.contains("at most 94 bytes"), "{e}");
        let fits = format!("{}/w.sock", dir(94));
        assert!(with("socket", &format!("path = {fits:?}")).is_ok());
    }

    #[test]
    fn a_log_level_must_name_a_level() {
        for bad in ["loud", "waq", "info,loud", "waq=loud", "", " , "] {
            let e = with("log", &format!("level = {bad:?}")).unwrap_err();
            assert_eq!(e.key, "log.level", "{bad}: {e}");
            assert!(
                e.message.contains("error, warn, info, debug, trace"),
                "{bad}: {e}"
            );
        }
        for good in [
            "info",
            "DEBUG",
            "off",
            "trace",
            "waq=debug,info",
            "waq=warn",
        ] {
            let c = with("log", &format!("level = {good:?}")).unwrap();
            assert_eq!(c.log.level, good);
        }
        let e = load_env(&[("WAQ__LOG__LEVEL", "loud")]).unwrap_err();
        assert_eq!(e.key, "log.level");
        assert!(e.message.contains("WAQ__LOG__LEVEL"), "{e}");
    }

    #[test]
    fn ids_from_the_environment_take_every_list_form() {
        for (value, ids) in [
            ("1000", vec![1000]),
            ("[1000]", vec![1000]),
            ("1000,1001", vec![1000, 1001]),
            ("[1000, 1001]", vec![1000, 1001]),
            (" 0 ", vec![0]),
        ] {
            let c = load_env(&[
                ("WAQ__SOCKET__ALLOWED_UIDS", value),
                ("WAQ__SOCKET__ALLOWED_GIDS", value),
            ])
            .unwrap_or_else(|e| panic!("{value}: {e}"));
            assert_eq!(c.socket.allowed_uids.as_ref(), Some(&ids), "{value}");
            assert_eq!(c.socket.allowed_gids.as_ref(), Some(&ids), "{value}");
        }
        for bad in ["-1", "4294967296", "1000;1001", "me"] {
            let e = load_env(&[("WAQ__SOCKET__ALLOWED_GIDS", bad)]).unwrap_err();
            assert!(e.key.starts_with("socket.allowed_gids"), "{bad}: {e}");
            assert!(
                e.message.contains("WAQ__SOCKET__ALLOWED_GIDS"),
                "{bad}: {e}"
            );
        }
        // The file keeps its list form, of integers.
        let c = with("socket", "allowed_uids = [1000, 1001]").unwrap();
        assert_eq!(c.socket.allowed_uids, Some(vec![1000, 1001]));
        for bad in ["[-1]", "[\"1000\"]", "\"1000\"", "[1000.7]", "[true]"] {
            let e = with("socket", &format!("allowed_uids = {bad}")).unwrap_err();
            assert!(e.key.starts_with("socket.allowed_uids"), "{bad}: {e}");
        }
    }

    #[test]
    fn an_empty_list_of_allowed_ids_is_refused_naming_the_key() {
        for key in ["allowed_uids", "allowed_gids"] {
            let e = with("socket", &format!("{key} = []")).unwrap_err();
            assert_eq!(e.key, format!("socket.{key}"));
            assert!(
                e.message.contains("is empty") && e.message.contains("leave the key out"),
                "{e}"
            );
            let var = format!("WAQ__SOCKET__{}", key.to_uppercase());
            for value in ["", " ", "[]", "[ ]"] {
                let e = load_env(&[(&var, value)]).unwrap_err();
                assert_eq!(e.key, format!("socket.{key}"), "{value:?}: {e}");
                assert!(
                    e.message.contains("is empty") && e.message.contains(&var),
                    "{value:?}: {e}"
                );
            }
        }
        // One list set and the other left out is fine.
        let c = with("socket", "allowed_gids = [998]").unwrap();
        assert_eq!(c.socket.allowed_uids, None);
    }

    #[test]
    fn an_error_from_the_environment_names_the_variable_not_the_file() {
        let e = load_env(&[("WAQ__BOGUS", "1")]).unwrap_err();
        assert_eq!(e.key, "bogus");
        assert!(e.message.contains("environment variable WAQ__BOGUS"), "{e}");
        assert!(!e.to_string().contains("c.toml"), "{e}");
        let e = load_env(&[
            ("WAQ__API__VERSION", "v26.0"),
            ("WAQ__DISPATCH__MAX_ATTEMPTS", "many"),
        ])
        .unwrap_err();
        assert_eq!(e.key, "dispatch.max_attempts");
        assert!(e.message.contains("WAQ__DISPATCH__MAX_ATTEMPTS"), "{e}");
        let e = load_env(&[("WAQ__DISPATCH__PAIR_BURST", "0")]).unwrap_err();
        assert_eq!(e.key, "dispatch.pair_burst");
        assert!(e.message.contains("WAQ__DISPATCH__PAIR_BURST"), "{e}");
        // Other variables are not ours.
        let c = load_env(&[("WAQX", "1"), ("HOME", "/root")]).unwrap();
        assert_eq!(c.dispatch.max_attempts, 10);
    }

    #[test]
    fn values_that_leave_the_daemon_useless_are_refused_with_the_range() {
        for (section, line, key) in [
            (
                "dispatch",
                "window_margin_s = 90000",
                "dispatch.window_margin_s",
            ),
            (
                "dispatch",
                "window_margin_s = 86400",
                "dispatch.window_margin_s",
            ),
            ("dispatch", "max_attempts = 0", "dispatch.max_attempts"),
            ("dispatch", "pair_burst = 0", "dispatch.pair_burst"),
            ("dispatch", "max_in_flight = -1", "dispatch.max_in_flight"),
            (
                "dispatch",
                "max_in_flight = 1000000000000",
                "dispatch.max_in_flight",
            ),
            ("dispatch", "global_mps = 0", "dispatch.global_mps"),
            ("dispatch", "retry_min_ms = 0", "dispatch.retry_min_ms"),
            (
                "dispatch",
                "retry_max_ms = 9223372036854775807",
                "dispatch.retry_max_ms",
            ),
            (
                "dispatch",
                "max_age_s = 18446744073709551",
                "dispatch.max_age_s",
            ),
            (
                "dispatch",
                "pair_interval_ms = 0",
                "dispatch.pair_interval_ms",
            ),
            ("dispatch", "retention_s = 0", "dispatch.retention_s"),
            (
                "socket",
                "max_request_bytes = 10",
                "socket.max_request_bytes",
            ),
            ("socket", "max_batch_bytes = 100", "socket.max_batch_bytes"),
            ("socket", "max_connections = 0", "socket.max_connections"),
            (
                "socket",
                "max_body_memory_bytes = 100",
                "socket.max_body_memory_bytes",
            ),
            ("api", "request_timeout_ms = 1", "api.request_timeout_ms"),
            ("api", "connect_timeout_ms = 0", "api.connect_timeout_ms"),
            ("store", "flush_every_ms = -1", "store.flush_every_ms"),
        ] {
            let e = with(section, line).unwrap_err();
            assert_eq!(e.key, key, "{line}: {e}");
            assert!(e.message.contains("must be from"), "{line}: {e}");
        }
        let e = with(
            "socket",
            "max_request_bytes = 65536\nmax_batch_bytes = 32768",
        )
        .unwrap_err();
        assert_eq!(e.key, "socket.max_batch_bytes");
        // Every batch body must fit in the body budget; by default one of the largest fits at
        // its full count (four times its size).
        let e = with(
            "socket",
            "max_batch_bytes = 65536\nmax_body_memory_bytes = 32768",
        )
        .unwrap_err();
        assert_eq!(e.key, "socket.max_body_memory_bytes");
        assert!(e.message.contains("socket.max_batch_bytes"), "{e}");
        let c = with("socket", "max_batch_bytes = 1073741824").unwrap();
        assert_eq!(c.socket.max_body_memory_bytes, 4 << 30);
        let c = with("socket", "max_batch_bytes = 65536").unwrap();
        assert_eq!(c.socket.max_body_memory_bytes, 256 << 20);
        let e = Config::from_toml(
            &format!("{MIN}\n[webhook]\nlisten = \"127.0.0.1:0\"\napp_secret = \"s\"\nmax_body_bytes = 10\n"),
            Path::new("."),
        )
        .unwrap_err();
        assert_eq!(e.key, "webhook.max_body_bytes");
        let e = Config::from_toml("state_dir = \"\"\n[[senders]]\nname = \"main\"\nphone_number_id = \"1\"\ntoken = \"t\"\n", Path::new(".")).unwrap_err();
        assert_eq!(e.key, "state_dir");
        let e = with("api", "version = \"vNaN\"").unwrap_err();
        assert_eq!(e.key, "api.version");
        // The edges themselves are fine.
        let c = with(
            "dispatch",
            "window_margin_s = 86399\nmax_attempts = 1\npair_burst = 1",
        )
        .unwrap();
        assert_eq!(c.dispatch.window_margin, Duration::from_secs(86_399));
        let c = with("store", "flush_every_ms = 0").unwrap();
        assert_eq!(c.store.flush_every_ms, None);
    }

    #[test]
    fn a_retention_shorter_than_the_pair_budgets_look_back_is_cautioned_not_refused() {
        // The default pair limit (6000 ms × 45) looks back 540 s.
        let c = with("dispatch", "retention_s = 539").unwrap();
        assert_eq!(c.dispatch.retention, Duration::from_secs(539));
        let cautions = c.cautions();
        assert_eq!(cautions.len(), 1, "{cautions:?}");
        for part in [
            "dispatch.retention_s is 539",
            "(540 s)",
            "dispatch.pair_burst",
        ] {
            assert!(cautions[0].contains(part), "{part}: {}", cautions[0]);
        }
        assert!(with("dispatch", "retention_s = 540")
            .unwrap()
            .cautions()
            .is_empty());
        assert!(Config::from_toml(MIN, Path::new("."))
            .unwrap()
            .cautions()
            .is_empty());
        // The bound follows the pair limit, rounded up to a second: 2 × 1001 ms × 10.
        let small = "pair_interval_ms = 1001\npair_burst = 10";
        let c = with("dispatch", &format!("{small}\nretention_s = 20")).unwrap();
        assert!(c.cautions()[0].contains("(21 s)"), "{:?}", c.cautions());
        let c = with("dispatch", &format!("{small}\nretention_s = 21")).unwrap();
        assert!(c.cautions().is_empty(), "{:?}", c.cautions());
        // A pair limit whose look-back passes the longest retention is still accepted.
        let c = with(
            "dispatch",
            "pair_interval_ms = 86400000\npair_burst = 100000\nretention_s = 315360000",
        )
        .unwrap();
        assert_eq!(c.cautions().len(), 1);
    }

    #[test]
    fn an_enum_value_is_refused_naming_the_key_and_the_choices() {
        let e = with("dispatch", "on_restart_sending = \"maybe\"").unwrap_err();
        assert_eq!(e.key, "dispatch.on_restart_sending");
        assert!(
            e.message.contains("\"resend\"") && e.message.contains("\"fail\""),
            "{e}"
        );
        let c = with("dispatch", "on_restart_sending = \"fail\"").unwrap();
        assert_eq!(c.dispatch.on_restart_sending, RestartPolicy::Fail);
        let e = with("log", "format = \"yaml\"").unwrap_err();
        assert_eq!(e.key, "log.format");
    }

    #[test]
    fn an_integer_socket_mode_is_refused_and_a_quoted_one_is_read_as_octal() {
        for line in ["mode = 0o660", "mode = 0o600", "mode = 660", "mode = 432"] {
            let e = with("socket", line).unwrap_err();
            assert_eq!(e.key, "socket.mode", "{line}: {e}");
            assert!(
                e.message.contains("quoted octal string") && e.message.contains("mode = \"0660\""),
                "{line}: {e}"
            );
        }
        for (line, mode) in [
            ("mode = \"0660\"", 0o660),
            ("mode = \"600\"", 0o600),
            ("mode = \"0777\"", 0o777),
        ] {
            assert_eq!(with("socket", line).unwrap().socket.mode, mode, "{line}");
        }
        let e = load_env(&[("WAQ__SOCKET__MODE", "999")]).unwrap_err();
        assert_eq!(e.key, "socket.mode");
        assert!(e.message.contains("WAQ__SOCKET__MODE"), "{e}");
    }

    /// The same text is the same mode, or the same refusal, in the file (quoted) and in
    /// `WAQ__SOCKET__MODE`.
    #[test]
    fn a_socket_mode_reads_alike_from_the_file_and_the_environment() {
        for (text, mode) in [
            ("0660", 0o660),
            ("660", 0o660),
            ("0600", 0o600),
            ("00640", 0o640),
        ] {
            assert_eq!(
                with("socket", &format!("mode = {text:?}"))
                    .unwrap()
                    .socket
                    .mode,
                mode,
                "{text}"
            );
            let c =
                load_env(&[("WAQ__SOCKET__MODE", text)]).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(c.socket.mode, mode, "{text}");
        }
        for (text, says) in [
            ("0o660", "without 0o"),
            ("0o640", "without 0o"),
            ("0O660", "without 0o"),
            ("\"0660\"", "has quotes around it"),
            ("'0660'", "has quotes around it"),
            ("7777", "setuid, setgid or sticky bit"),
            ("4660", "setuid, setgid or sticky bit"),
            ("1777", "setuid, setgid or sticky bit"),
            ("17777", "at most four octal digits"),
            ("999", "not an octal file mode"),
            ("+660", "not an octal file mode"),
            ("", "not an octal file mode"),
            ("0444", "lets no producer connect"),
        ] {
            let from_file = with("socket", &format!("mode = {text:?}")).unwrap_err();
            let from_env = load_env(&[("WAQ__SOCKET__MODE", text)]).unwrap_err();
            for e in [&from_file, &from_env] {
                assert_eq!(e.key, "socket.mode", "{text}: {e}");
                assert!(e.message.contains(says), "{text}: {e}");
            }
            assert!(from_env.message.contains("WAQ__SOCKET__MODE"), "{from_env}");
        }
    }

    #[test]
    fn two_senders_on_one_phone_number_id_are_refused() {
        let text = format!(
            "{MIN}\n[[senders]]\nname = \"second\"\nphone_number_id = \"1\"\ntoken = \"t\"\n"
        );
        let e = Config::from_toml(&text, Path::new(".")).unwrap_err();
        assert_eq!(e.key, "senders[1].phone_number_id", "{e}");
        assert!(e.message.contains("`main`"), "{e}");
        let ok = text.replace(
            "name = \"second\"\nphone_number_id = \"1\"",
            "name = \"second\"\nphone_number_id = \"2\"",
        );
        assert_eq!(
            Config::from_toml(&ok, Path::new("."))
                .unwrap()
                .senders
                .len(),
            2
        );
    }

    #[test]
    fn an_empty_secret_source_says_it_is_empty_not_unset() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        // Names unique to this test: the environment is shared by the test process.
        std::env::set_var("WAQ_TEST_EMPTY_SECRET", "");
        std::env::set_var("WAQ_TEST_BLANK_SECRET", "  ");
        for (line, key, says) in [
            (
                "token_env = \"WAQ_TEST_EMPTY_SECRET\"",
                "senders[0].token_env",
                "environment variable WAQ_TEST_EMPTY_SECRET is set but empty",
            ),
            (
                "token_env = \"WAQ_TEST_BLANK_SECRET\"",
                "senders[0].token_env",
                "environment variable WAQ_TEST_BLANK_SECRET is set but empty",
            ),
            (
                "token_env = \"WAQ_TEST_SURELY_UNSET\"",
                "senders[0].token_env",
                "environment variable WAQ_TEST_SURELY_UNSET is not set",
            ),
            (
                "token_env = \"\"",
                "senders[0].token_env",
                "name the environment variable",
            ),
            (
                &format!("token_file = {:?}", empty.display().to_string()),
                "senders[0].token_file",
                "is empty",
            ),
            ("token = \"\"", "senders[0].token", "is empty"),
        ] {
            let e =
                Config::from_toml(&MIN.replace("token = \"t\"", line), Path::new(".")).unwrap_err();
            assert_eq!(e.key, key, "{line}: {e}");
            assert!(e.message.contains(says), "{line}: {e}");
        }
        let webhook = |line: &str| {
            Config::from_toml(
                &format!("{MIN}\n[webhook]\nlisten = \"127.0.0.1:0\"\n{line}\n"),
                Path::new("."),
            )
            .unwrap_err()
        };
        let e = webhook("app_secret_env = \"WAQ_TEST_EMPTY_SECRET\"");
        assert_eq!(e.key, "webhook.app_secret_env", "{e}");
        assert!(e.message.contains("is set but empty"), "{e}");
        let e = webhook("app_secret = \"s\"\nverify_token_env = \"WAQ_TEST_EMPTY_SECRET\"");
        assert_eq!(e.key, "webhook.verify_token_env", "{e}");
        assert!(e.message.contains("is set but empty"), "{e}");
    }

    /// The keys `config.toml` shows, commented out or not: (section, key, value as written).
    fn keys_of_the_shipped_config() -> Vec<(String, String, String)> {
        let mut section = String::new();
        let mut keys = Vec::new();
        for line in include_str!("../config.toml").lines() {
            let mut line = line.trim();
            while let Some(rest) = line.strip_prefix('#') {
                line = rest.trim_start();
            }
            if line.starts_with('[') {
                section = line.trim_matches(|c| c == '[' || c == ']').to_string();
            } else if let Some((key, value)) = line.split_once(" = ") {
                if key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                    keys.push((section.clone(), key.to_string(), value.to_string()));
                }
            }
        }
        keys
    }

    /// The integer keys `config.toml` shows, commented out or not: (section, key, value).
    fn integer_keys_of_the_shipped_config() -> Vec<(String, String, i64)> {
        keys_of_the_shipped_config()
            .into_iter()
            .filter_map(|(section, key, value)| Some((section, key, value.parse().ok()?)))
            .collect()
    }

    /// Every text key the shipped config.toml shows outside `[[senders]]` (which the
    /// environment cannot set) keeps a `WAQ__…` value as written, digits included.
    #[test]
    fn text_keys_from_the_environment_stay_text() {
        let shown: Vec<String> = keys_of_the_shipped_config()
            .into_iter()
            .filter(|(section, _, value)| value.starts_with('"') && section != "senders")
            .map(|(section, key, _)| match section.is_empty() {
                true => key,
                false => format!("{section}.{key}"),
            })
            .collect();
        assert!(
            shown.len() >= 10,
            "config.toml shows fewer text keys: {shown:?}"
        );
        for key in &shown {
            assert!(
                TEXT_KEYS.contains(&key.as_str()),
                "{key} is not in TEXT_KEYS"
            );
        }
        let text = doc_with("webhook", "");
        for token in ["0123", "123456789012345678901234"] {
            let (c, _) = load_text(&text, &[("WAQ__WEBHOOK__VERIFY_TOKEN", token)]);
            let c = c.unwrap_or_else(|e| panic!("{token}: {e}"));
            let webhook = c.webhook.expect("the webhook section");
            assert_eq!(webhook.verify_token.expose(), token);
        }
    }

    /// `MIN` with `line` in `[section]`, and what that section needs to be read.
    fn doc_with(section: &str, line: &str) -> String {
        match section {
            // MIN's last table is its sender.
            "senders" => format!("{MIN}{line}\n"),
            "webhook" => {
                format!("{MIN}\n[webhook]\nlisten = \"127.0.0.1:0\"\napp_secret = \"s\"\n{line}\n")
            }
            _ => format!("{MIN}\n[{section}]\n{line}\n"),
        }
    }

    /// `text` as the file c.toml, loaded with `vars` as the whole environment.
    fn load_text(text: &str, vars: &[(&str, &str)]) -> (Result<Config, ConfigError>, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        let vars = vars
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        (Config::load_with_env(&path, vars), path)
    }

    #[test]
    fn a_number_beyond_64_bits_is_refused_with_its_key() {
        for (section, line, named) in [
            ("senders", "mps = 99999999999999999999999", "senders[0].mps"),
            (
                "dispatch",
                "retry_min_ms = 0x1_0000_0000_0000_0000",
                "dispatch.retry_min_ms",
            ),
            (
                "dispatch",
                "retry_min_ms = -9223372036854775809",
                "dispatch.retry_min_ms",
            ),
            ("dispatch", "retry_min_ms = 1e999", "dispatch.retry_min_ms"),
        ] {
            let (e, path) = load_text(&doc_with(section, line), &[]);
            let e = e.expect_err(line);
            assert_eq!(e.key, named, "{line}: {e}");
            assert!(e.message.contains("out of range"), "{line}: {e}");
            if line.contains("0x") {
                assert!(e.message.contains("`0x10000000000000000`"), "{e}");
            }
            if line.contains("= -") {
                assert!(
                    e.message
                        .contains("the smallest integer is -9223372036854775808"),
                    "{e}"
                );
            }
            assert!(
                e.message.contains(&format!("(in {})", path.display())),
                "{e}"
            );
        }
        // The largest integer is read as the number it is (and refused, if at all, as too big
        // for its key, not as out of range).
        let (c, _) = load_text(
            &doc_with("dispatch", "retry_min_ms = 9223372036854775807"),
            &[],
        );
        assert!(c.is_err_and(|e| !e.message.contains("out of range")));
        let var = "WAQ__DISPATCH__RETRY_MIN_MS";
        for bad in ["99999999999999999999999", "-9223372036854775809"] {
            let (e, _) = load_text(&doc_with("dispatch", ""), &[(var, bad)]);
            let e = e.expect_err(bad);
            assert_eq!(e.key, "dispatch.retry_min_ms", "{bad}: {e}");
            assert!(e.message.contains("out of range"), "{bad}: {e}");
            assert!(e.message.contains(var), "{bad}: {e}");
        }
    }

    #[test]
    fn every_integer_key_refuses_a_boolean_a_fraction_and_quoted_digits() {
        let keys = integer_keys_of_the_shipped_config();
        assert!(keys.len() >= 19, "config.toml shows fewer keys: {keys:?}");
        for (section, key, good) in &keys {
            let named = match section.as_str() {
                "senders" => format!("senders[0].{key}"),
                _ => format!("{section}.{key}"),
            };
            let (c, _) = load_text(&doc_with(section, &format!("{key} = {good}")), &[]);
            c.unwrap_or_else(|e| panic!("{named} = {good}: {e}"));
            for bad in ["true", "false", "80.9", "0.4", "-0.4", "80.0", "\"80\""] {
                let (e, path) = load_text(&doc_with(section, &format!("{key} = {bad}")), &[]);
                let e = e.expect_err(&format!("{named} = {bad} was taken"));
                assert_eq!(e.key, named, "{bad}: {e}");
                assert!(e.message.contains("expected an integer"), "{bad}: {e}");
                assert!(
                    e.message.contains(&format!("(in {})", path.display())),
                    "{bad}: {e}"
                );
            }
            // [[senders]] cannot come from the environment.
            if section == "senders" {
                continue;
            }
            let var = format!("WAQ__{}__{}", section.to_uppercase(), key.to_uppercase());
            let (c, _) = load_text(&doc_with(section, ""), &[(&var, &good.to_string())]);
            c.unwrap_or_else(|e| panic!("{var}={good}: {e}"));
            for bad in [
                "true", "FALSE", "2.5", "80.0", "1e3", "\"80\"", " 80", "0x50", "",
            ] {
                let (e, _) = load_text(&doc_with(section, ""), &[(&var, bad)]);
                let e = e.expect_err(&format!("{var}={bad:?} was taken"));
                assert_eq!(e.key, named, "{var}={bad:?}: {e}");
                assert!(
                    e.message
                        .contains(&format!("(in the environment variable {var})")),
                    "{var}={bad:?}: {e}"
                );
            }
        }
    }

    #[test]
    fn a_range_or_semantic_error_says_where_the_value_came_from() {
        for (text, key) in [
            (doc_with("senders", "mps = 0"), "senders[0].mps"),
            (
                doc_with("dispatch", "retry_min_ms = 5000\nretry_max_ms = 10"),
                "dispatch.retry_max_ms",
            ),
            (
                format!("{MIN}\n[[senders]]\nname = \"second\"\nphone_number_id = \"1\"\ntoken = \"t\"\n"),
                "senders[1].phone_number_id",
            ),
        ] {
            let (e, path) = load_text(&text, &[]);
            let e = e.unwrap_err();
            assert_eq!(e.key, key, "{e}");
            assert!(
                e.message.ends_with(&format!("(in {})", path.display())),
                "{e}"
            );
        }
        // A check across keys names the section's overrides next to the file.
        for (var, value, key) in [
            (
                "WAQ__WEBHOOK__LISTEN",
                "127.0.0.1:8080",
                "webhook.app_secret",
            ),
            (
                "WAQ__SOCKET__MAX_REQUEST_BYTES",
                "40000000",
                "socket.max_batch_bytes",
            ),
        ] {
            let e = load_env(&[(var, value)]).unwrap_err();
            assert_eq!(e.key, key);
            let said = format!(", with {var} from the environment)");
            assert!(e.message.ends_with(&said), "{e}");
        }
        let e = load_env(&[("WAQ__DISPATCH__RETRY_MIN_MS", "600000")]).unwrap_err();
        assert_eq!(e.key, "dispatch.retry_max_ms");
        assert!(
            e.message
                .ends_with(", with WAQ__DISPATCH__RETRY_MIN_MS from the environment)"),
            "{e}"
        );
        // An override the check did not look at is not named, even in the same section.
        let (e, path) = load_text(
            &format!("{MIN}\n[dispatch]\nmax_attempts = 0\n"),
            &[("WAQ__DISPATCH__PAIR_BURST", "10")],
        );
        let e = e.unwrap_err();
        assert_eq!(e.key, "dispatch.max_attempts");
        assert!(
            e.message.ends_with(&format!("(in {})", path.display())),
            "{e}"
        );
        let e = load_env(&[("WAQ__DISPATCH__MAX_IN_FLIGHT", "0")]).unwrap_err();
        assert_eq!(e.key, "dispatch.max_in_flight");
        assert!(
            e.message
                .ends_with("(set by the environment variable WAQ__DISPATCH__MAX_IN_FLIGHT)"),
            "{e}"
        );
    }

    #[test]
    fn senders_from_the_environment_are_refused_saying_they_cannot_be_set_there() {
        for var in ["WAQ__SENDERS__0__MPS", "WAQ__SENDERS", "waq__senders__mps"] {
            let e = load_env(&[(var, "0")]).unwrap_err();
            assert!(e.key.starts_with("senders"), "{var}: {e}");
            assert!(
                e.message
                    .contains("[[senders]] cannot be set from the environment")
                    && e.message.contains(var),
                "{var}: {e}"
            );
        }
    }

    #[test]
    fn a_section_given_a_value_is_named_a_section_not_a_type() {
        for (section, example) in SECTIONS {
            let var = format!("WAQ__{}", section.to_uppercase());
            let e = load_env(&[(&var, "x")]).unwrap_err();
            assert_eq!(e.key, section, "{e}");
            let form = format!("WAQ__{}__KEY", section.to_uppercase());
            let one = format!("WAQ__{}__{example}", section.to_uppercase());
            for part in ["is a section, not a key", &form, &one, &var] {
                assert!(e.message.contains(part), "{part}: {e}");
            }
            assert!(!e.message.contains("struct"), "{e}");
            let (e, _) = load_text(&format!("{section} = \"x\"\n{MIN}"), &[]);
            let e = e.unwrap_err();
            assert_eq!(e.key, section, "{e}");
            assert!(
                e.message.contains("is a section, not a key")
                    && e.message.contains(&format!("[{section}]"))
                    && !e.message.contains("struct"),
                "{e}"
            );
        }
        // A key addressed as a section.
        for (var, key, form) in [
            ("WAQ__STATE_DIR__X", "state_dir", "WAQ__STATE_DIR"),
            ("WAQ__API__VERSION__X", "api.version", "WAQ__API__VERSION"),
            (
                "WAQ__DISPATCH__MAX_IN_FLIGHT__X",
                "dispatch.max_in_flight",
                "WAQ__DISPATCH__MAX_IN_FLIGHT",
            ),
        ] {
            let e = load_env(&[(var, "1")]).unwrap_err();
            assert_eq!(e.key, key, "{e}");
            assert!(
                e.message
                    .contains(&format!("is a key, not a section: set it as {form} ")),
                "{e}"
            );
        }
    }

    #[test]
    fn waq_variables_with_one_underscore_are_warned_of_unless_known() {
        // A name unique to this test: the environment is shared by the test process.
        std::env::set_var("WAQ_TEST_OWN_TOKEN", "t");
        let cfg = Config::from_toml(
            &MIN.replace("token = \"t\"", "token_env = \"WAQ_TEST_OWN_TOKEN\""),
            Path::new("."),
        )
        .unwrap();
        let vars = [
            "WAQ_DISPATCH_MAX_IN_FLIGHT",
            "WAQ_SOCKET",
            "WAQ_SIM",
            "WAQ_SIM__TOKEN",
            "WAQ_DIR",
            "WAQ_WEBHOOK",
            "WAQ_CRASH_LOOPS",
            "WAQ__API__VERSION",
            "WAQ_TEST_OWN_TOKEN",
            "WAQ_STATE_DIR",
            "waq_log__level",
            "WAQ_SOMETHING",
            "WAQX",
            "HOME",
        ]
        .map(|n| (OsString::from(n), OsString::from("0")));
        let warnings = misspelt_overrides(&cfg, vars);
        std::env::remove_var("WAQ_TEST_OWN_TOKEN");
        let named: Vec<&str> = warnings
            .iter()
            .filter_map(|w| w.strip_prefix("the environment variable "))
            .filter_map(|w| w.split(' ').next())
            .collect();
        assert_eq!(
            named,
            [
                "WAQ_DISPATCH_MAX_IN_FLIGHT",
                "WAQ_SOMETHING",
                "WAQ_STATE_DIR",
                "waq_log__level"
            ],
            "{warnings:#?}"
        );
        for w in &warnings {
            assert!(w.contains("overrides are spelled WAQ__SECTION__KEY"), "{w}");
        }
        assert!(
            warnings[0].ends_with("was WAQ__DISPATCH__MAX_IN_FLIGHT meant?"),
            "{}",
            warnings[0]
        );
        assert!(warnings[2].ends_with("was WAQ__STATE_DIR meant?"));
        assert!(warnings[3].ends_with("was WAQ__LOG__LEVEL meant?"));
    }

    /// Every `WAQ_…` name (one underscore) the repository's documents, sources and tests use,
    /// other than examples of a misspelt override, is one `misspelt_overrides` leaves alone: a
    /// documented variable must not draw a warning.
    #[test]
    fn every_waq_variable_of_the_project_is_known_to_the_warning() {
        fn files(dir: &Path, out: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    files(&path, out);
                } else if path
                    .extension()
                    .is_some_and(|e| e == "rs" || e == "md" || e == "toml" || e == "sh")
                {
                    out.push(path);
                }
            }
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut paths = vec![root.join("README.md"), root.join("config.toml")];
        for dir in ["docs", "src", "tests", "examples", "benches", "systemd"] {
            files(&root.join(dir), &mut paths);
        }
        // This file's names are the list itself and the misspellings its tests warn of.
        paths.retain(|p| !p.ends_with("src/config.rs"));
        let mut seen = std::collections::BTreeSet::new();
        for path in &paths {
            let text = std::fs::read_to_string(path).unwrap();
            let mut rest = text.as_str();
            while let Some(at) = rest.find("WAQ_") {
                let before = rest[..at].chars().next_back();
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let after = &rest[at + name.len()..];
                rest = &rest[at + name.len()..];
                let part_of_a_word = before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
                // Not variables: a file of vendor/sled and a constant of the client.
                let not_a_variable =
                    after.starts_with(".md") || name == "WAQ_USER_AGENT" || name == "WAQ_PATCH";
                // The configuration tests' secrets, which their configurations name.
                let a_tests_secret = name.starts_with("WAQ_TEST_");
                // The documents' examples of a misspelt override (and `WAQ_` itself).
                let a_misspelling = override_meant(&name).is_some() || name == "WAQ_";
                if !part_of_a_word
                    && !name.starts_with("WAQ__")
                    && !not_a_variable
                    && !a_tests_secret
                    && !a_misspelling
                {
                    seen.insert(name);
                }
            }
        }
        assert!(seen.contains("WAQ_SOCKET"), "{seen:?}");
        let cfg = Config::from_toml(MIN, Path::new(".")).unwrap();
        let vars = seen
            .iter()
            .map(|n| (OsString::from(n), OsString::from("1")));
        let warned = misspelt_overrides(&cfg, vars);
        assert!(warned.is_empty(), "{warned:#?}");
    }

    #[test]
    fn a_directory_for_the_configuration_is_named_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let e = Config::load_with_env(dir.path(), []).unwrap_err();
        assert_eq!(e.key, "--config");
        assert!(e.message.contains("is a directory"), "{e}");
    }

    /// Every field of the raw configuration is read by a type that sees the value as written
    /// (`Int`, `Mode`, `Ids`: `deserialize_any`), as text, or as a table or list of them; a bare
    /// number or bool would be read with the `config` crate's conversions (`true` as 1, 80.9 as
    /// 81, "80" as 80).
    #[test]
    fn no_raw_field_is_read_with_the_crates_number_conversions() {
        let allowed = [
            "deserialize_any",
            "deserialize_string",
            "deserialize_struct",
            "deserialize_seq",
        ];
        let root = probe::fields::<raw::Root>();
        let tables: Vec<&str> = root
            .iter()
            .filter(|(_, m)| m == "deserialize_struct" || m == "deserialize_seq")
            .map(|(f, _)| *f)
            .collect();
        // Each table of the root is one of those probed below.
        assert_eq!(
            tables,
            ["log", "socket", "api", "senders", "dispatch", "webhook", "store"]
        );
        for (table, fields) in [
            ("", root.clone()),
            ("log", probe::fields::<raw::Log>()),
            ("socket", probe::fields::<raw::Socket>()),
            ("api", probe::fields::<raw::Api>()),
            ("senders", probe::fields::<raw::Sender>()),
            ("dispatch", probe::fields::<raw::Dispatch>()),
            ("webhook", probe::fields::<raw::Webhook>()),
            ("store", probe::fields::<raw::Store>()),
        ] {
            assert!(!fields.is_empty(), "{table}");
            for (field, method) in fields {
                assert!(
                    allowed.contains(&method.as_str()),
                    "{table}.{field} is read with {method}"
                );
            }
        }
    }

    #[test]
    fn a_token_that_cannot_go_in_a_header_is_refused_naming_where_it_came_from() {
        let dir = tempfile::tempdir().unwrap();
        for (token, says) in [
            ("sekrit\nline", "a line break at character 7"),
            ("sekrit\r", "a line break"),
            (" sekrit", "a space at character 1"),
            ("sekrit ", "a space at character 7"),
            ("sek rit", "a space"),
            ("sek\trit", "a tab"),
            ("sek\u{7f}rit", "a control character"),
            ("sekrit\u{e9}", "a non-ASCII character"),
        ] {
            // TOML escapes DEL as \u007F; Rust's `{:?}` would write \u{7f}.
            let quoted = format!("{token:?}").replace("\\u{7f}", "\\u007F");
            let inline = MIN.replace("token = \"t\"", &format!("token = {quoted}"));
            let e = Config::from_toml(&inline, Path::new(".")).unwrap_err();
            assert_eq!(e.key, "senders[0].token", "{token:?}: {e}");
            // Names unique to this test: the environment is shared by the test process.
            std::env::set_var("WAQ_TEST_HEADER_TOKEN", token);
            let by_env = MIN.replace("token = \"t\"", "token_env = \"WAQ_TEST_HEADER_TOKEN\"");
            let e2 = Config::from_toml(&by_env, Path::new(".")).unwrap_err();
            assert_eq!(e2.key, "senders[0].token_env", "{token:?}: {e2}");
            assert!(
                e2.message
                    .contains("environment variable WAQ_TEST_HEADER_TOKEN has"),
                "{e2}"
            );
            for e in [e, e2] {
                assert!(
                    e.message.contains(says) && e.message.contains("HTTP header"),
                    "{token:?}: {e}"
                );
                assert!(!e.to_string().contains("sek"), "{token:?}: {e}");
            }
        }
        std::env::remove_var("WAQ_TEST_HEADER_TOKEN");
        let file = dir.path().join("token");
        std::fs::write(&file, "sekrit\nline\n").unwrap();
        let by_file = MIN.replace(
            "token = \"t\"",
            &format!("token_file = {:?}", file.display().to_string()),
        );
        let e = Config::from_toml(&by_file, Path::new(".")).unwrap_err();
        assert_eq!(e.key, "senders[0].token_file", "{e}");
        assert!(e.message.contains("a line break"), "{e}");
        assert!(!e.to_string().contains("sek"), "{e}");
        // The line break that ends the file is not part of the token.
        std::fs::write(&file, "sekrit-token_0.9~+/=\n").unwrap();
        let c = Config::from_toml(&by_file, Path::new(".")).unwrap();
        assert_eq!(c.senders[0].token.expose(), "sekrit-token_0.9~+/=");
        // The webhook's secrets go in no header.
        let c = Config::from_toml(
            &format!("{MIN}\n[webhook]\nlisten = \"127.0.0.1:0\"\napp_secret = \"s e\"\nverify_token = \"v t\"\n"),
            Path::new("."),
        )
        .unwrap();
        assert!(c.webhook.is_some());
    }

    #[test]
    fn a_key_inside_a_sender_is_written_with_its_dot() {
        let e = Config::from_toml(
            &MIN.replace("token = \"t\"", "token = \"t\"\nmps = \"x\""),
            Path::new("."),
        )
        .unwrap_err();
        assert_eq!(e.key, "senders[0].mps", "{e}");
        let e = Config::from_toml(
            &MIN.replace("token = \"t\"", "token = \"t\"\nmps = -3"),
            Path::new("."),
        )
        .unwrap_err();
        assert_eq!(e.key, "senders[0].mps", "{e}");
        assert!(e.message.contains("from 1 to 10000"), "{e}");
        let e = Config::from_toml(&MIN.replace("token =", "tokn ="), Path::new(".")).unwrap_err();
        assert_eq!(e.key, "senders[0].tokn", "{e}");
        assert_eq!(dotted("senders[0]mps"), "senders[0].mps");
        assert_eq!(dotted("a[0][1].b"), "a[0][1].b");
    }

    #[test]
    fn a_webhook_section_without_listen_is_still_checked_but_needs_no_secret() {
        for (line, key) in [
            ("path = \"nope\"", "webhook.path"),
            ("forward_url = \"ftp://x\"", "webhook.forward_url"),
            (
                "forward_url = \"http://u:pw@127.0.0.1:99999/x\"",
                "webhook.forward_url",
            ),
            ("forward_url = \"http://u:pw@/x\"", "webhook.forward_url"),
            ("forward_url = \"http://[::1/x\"", "webhook.forward_url"),
            ("max_body_bytes = 5", "webhook.max_body_bytes"),
        ] {
            let e = with("webhook", line).unwrap_err();
            assert_eq!(e.key, key, "{line}: {e}");
        }
        // Its secrets are only looked up for a listener.
        let c = with("webhook", "app_secret_env = \"WAQ_TEST_UNSET_SECRET\"").unwrap();
        assert!(c.webhook.is_none());
    }

    #[test]
    fn a_socket_mode_no_producer_can_connect_with_is_refused() {
        for mode in ["0", "0000", "0444", "0500"] {
            let e = with("socket", &format!("mode = \"{mode}\"")).unwrap_err();
            assert_eq!(e.key, "socket.mode", "{mode}: {e}");
            assert!(e.message.contains("lets no producer connect"), "{e}");
        }
        assert_eq!(
            with("socket", "mode = \"0200\"").unwrap().socket.mode,
            0o200
        );
    }

    #[test]
    fn a_token_file_loses_its_line_break_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        let doc = format!(
            "state_dir = \"/tmp/x\"\n[[senders]]\nname = \"main\"\nphone_number_id = \"1\"\ntoken_file = {:?}\n",
            file.display().to_string()
        );
        for (content, ok) in [
            ("SEKRIT\n", true),
            ("SEKRIT\r\n", true),
            ("SEKRIT", true),
            (" SEKRIT\n", false),
            ("SEKRIT \n", false),
        ] {
            std::fs::write(&file, content).unwrap();
            let c = Config::from_toml(&doc, Path::new("."));
            match ok {
                true => assert_eq!(
                    c.unwrap().senders[0].token.expose(),
                    "SEKRIT",
                    "{content:?}"
                ),
                false => {
                    let e = c.unwrap_err();
                    assert_eq!(e.key, "senders[0].token_file", "{content:?}: {e}");
                    assert!(!e.message.contains("SEKRIT"), "{e}");
                }
            }
        }
    }

    #[test]
    fn a_secret_file_may_start_with_the_credentials_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("wa_access_token"), "tok3n\n").unwrap();
        std::fs::write(dir.path().join("wa_app_secret"), "s3cret\n").unwrap();
        std::fs::write(dir.path().join("wa_verify_token"), "v3rify\n").unwrap();
        let doc = |token: &str, webhook: &str| {
            format!(
                "{}\n[webhook]\nlisten = \"127.0.0.1:0\"\n{webhook}\n",
                MIN.replace("token = \"t\"", &format!("token_file = {token:?}"))
            )
        };
        let both = doc(
            "${CREDENTIALS_DIRECTORY}/wa_access_token",
            "app_secret_file = \"$CREDENTIALS_DIRECTORY/wa_app_secret\"\n\
             verify_token_file = \"${CREDENTIALS_DIRECTORY}//wa_verify_token\"",
        );
        // The one test that sets it: the environment is shared by the test process.
        std::env::set_var("CREDENTIALS_DIRECTORY", dir.path());
        // The directory is absolute: the config file's does not matter.
        let c = Config::from_toml(&both, Path::new("/etc/waq"));
        let other = Config::from_toml(
            &doc("$HOME/wa_access_token", "app_secret = \"s\""),
            Path::new("."),
        );
        let suffix = Config::from_toml(
            &doc(
                "$CREDENTIALS_DIRECTORYX/wa_access_token",
                "app_secret = \"s\"",
            ),
            Path::new("."),
        );
        std::env::remove_var("CREDENTIALS_DIRECTORY");
        let unset = Config::from_toml(&both, Path::new("."));
        let c = c.unwrap();
        assert_eq!(c.senders[0].token.expose(), "tok3n");
        let webhook = c.webhook.unwrap();
        assert_eq!(webhook.app_secret.expose(), "s3cret");
        assert_eq!(webhook.verify_token.expose(), "v3rify");
        for e in [other.unwrap_err(), suffix.unwrap_err()] {
            assert_eq!(e.key, "senders[0].token_file", "{e}");
            assert!(
                e.message
                    .contains("only ${CREDENTIALS_DIRECTORY} is expanded"),
                "{e}"
            );
        }
        let e = unset.unwrap_err();
        assert_eq!(e.key, "senders[0].token_file", "{e}");
        for part in [
            "$CREDENTIALS_DIRECTORY, which is not set",
            "LoadCredential=",
        ] {
            assert!(e.message.contains(part), "{part}: {e}");
        }
        // Unset, a webhook's file is named by its own key.
        let e = Config::from_toml(
            &doc(
                &dir.path().join("wa_access_token").display().to_string(),
                "app_secret_file = \"${CREDENTIALS_DIRECTORY}/wa_app_secret\"",
            ),
            Path::new("."),
        )
        .unwrap_err();
        assert_eq!(e.key, "webhook.app_secret_file", "{e}");
        assert!(e.message.contains("LoadCredential="), "{e}");
    }

    #[test]
    fn a_webhook_secret_with_white_space_at_an_end_is_refused() {
        for value in [" s", "s ", "s\t"] {
            let line = format!("listen = \"127.0.0.1:0\"\napp_secret = {value:?}");
            let e = with("webhook", &line).unwrap_err();
            assert_eq!(e.key, "webhook.app_secret", "{value:?}: {e}");
            assert!(e.message.contains("white space"), "{e}");
        }
        let c = with("webhook", "listen = \"127.0.0.1:0\"\napp_secret = \"s e\"").unwrap();
        assert_eq!(c.webhook.unwrap().app_secret.expose(), "s e");
    }

    #[test]
    fn a_clash_between_keys_names_every_variable_that_set_them() {
        let (e, _) = load_text(
            MIN,
            &[
                ("WAQ__DISPATCH__RETRY_MIN_MS", "5000"),
                ("WAQ__DISPATCH__RETRY_MAX_MS", "1000"),
            ],
        );
        let e = e.unwrap_err();
        assert_eq!(e.key, "dispatch.retry_max_ms");
        for part in [
            "WAQ__DISPATCH__RETRY_MAX_MS",
            "WAQ__DISPATCH__RETRY_MIN_MS",
            "1000 < 5000",
        ] {
            assert!(e.message.contains(part), "{part}: {e}");
        }
        let doc = format!(
            "{MIN}\n[webhook]\nlisten = \"127.0.0.1:0\"\napp_secret_env = \"WAQ_TEST_SECRET\"\n"
        );
        let (e, _) = load_text(
            &doc,
            &[
                ("WAQ_TEST_SECRET", "s"),
                ("WAQ__WEBHOOK__APP_SECRET_FILE", "/nonexistent"),
            ],
        );
        let e = e.unwrap_err();
        assert_eq!(e.key, "webhook.app_secret");
        assert!(e.message.contains("WAQ__WEBHOOK__APP_SECRET_FILE"), "{e}");
    }

    #[test]
    fn a_parse_error_does_not_quote_the_line_that_may_hold_a_secret() {
        let (e, _) = load_text(
            "state_dir = \"/tmp/x\"\n[[senders]]\nname = \"main\"\nphone_number_id = \"1\"\ntoken = \"SEKRIT1\n",
            &[],
        );
        let e = e.unwrap_err();
        assert!(!e.message.contains("SEKRIT1"), "{e}");
        assert!(e.message.contains("line 5"), "{e}");
    }

    #[test]
    fn relative_paths_are_the_config_files_neighbours() {
        let text = "state_dir = \"st\"\n[socket]\npath = \"run/w.sock\"\n[[senders]]\nname = \"main\"\nphone_number_id = \"1\"\ntoken = \"t\"\n";
        let c = Config::from_toml(text, Path::new("/etc/waq")).unwrap();
        assert_eq!(c.state_dir, Path::new("/etc/waq/st"));
        assert_eq!(c.socket.path, Path::new("/etc/waq/run/w.sock"));
        let c = Config::from_toml(MIN, Path::new("/etc/waq")).unwrap();
        assert_eq!(c.state_dir, Path::new("/tmp/x"), "an absolute path stays");
    }

    #[test]
    fn a_config_from_a_pipe_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("config.fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let writer = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::write(fifo, MIN).unwrap())
        };
        let c = Config::load_with_env(&fifo, std::iter::empty()).unwrap();
        writer.join().unwrap();
        assert_eq!(c.senders[0].name, "main");
    }
}

/// Which `Deserializer` method a struct's fields call, each found by deserializing the struct
/// from a map that holds that one field: the method's name comes back as the error.
#[cfg(test)]
mod probe {
    use serde::de::{self, value::Error, Deserialize, Deserializer, IntoDeserializer, Visitor};

    /// The struct's fields, each with the method its type calls (inside an `Option`).
    pub fn fields<T: for<'de> Deserialize<'de>>() -> Vec<(&'static str, String)> {
        let Err(names) = T::deserialize(Struct(None)) else {
            panic!("not a struct");
        };
        names
            .to_string()
            .split(',')
            .map(|name| {
                let name: &'static str = Box::leak(name.to_string().into_boxed_str());
                let method = match T::deserialize(Struct(Some(name))) {
                    Err(e) => e.to_string(),
                    Ok(_) => "nothing".into(),
                };
                (name, method)
            })
            .collect()
    }

    /// Without a field: answers with the struct's field names. With one: a map of that field.
    struct Struct(Option<&'static str>);

    impl<'de> Deserializer<'de> for Struct {
        type Error = Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
            Err(de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            visitor: V,
        ) -> Result<V::Value, Error> {
            match self.0 {
                None => Err(de::Error::custom(fields.join(","))),
                Some(field) => visitor.visit_map(One(Some(field))),
            }
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }

    struct One(Option<&'static str>);

    impl<'de> de::MapAccess<'de> for One {
        type Error = Error;
        fn next_key_seed<K: de::DeserializeSeed<'de>>(
            &mut self,
            seed: K,
        ) -> Result<Option<K::Value>, Error> {
            self.0
                .take()
                .map(|name| seed.deserialize(name.into_deserializer()))
                .transpose()
        }
        fn next_value_seed<V: de::DeserializeSeed<'de>>(
            &mut self,
            seed: V,
        ) -> Result<V::Value, Error> {
            seed.deserialize(Leaf)
        }
    }

    /// A field's value: fails with the name of the method called, looking inside an `Option`.
    struct Leaf;

    macro_rules! named {
        ($($method:ident)*) => {$(
            fn $method<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
                Err(de::Error::custom(stringify!($method)))
            }
        )*};
    }

    impl<'de> Deserializer<'de> for Leaf {
        type Error = Error;
        fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            visitor.visit_some(Leaf)
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            _: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Error> {
            Err(de::Error::custom("deserialize_struct"))
        }
        fn deserialize_unit_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            _: V,
        ) -> Result<V::Value, Error> {
            Err(de::Error::custom("deserialize_unit_struct"))
        }
        fn deserialize_newtype_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            _: V,
        ) -> Result<V::Value, Error> {
            Err(de::Error::custom("deserialize_newtype_struct"))
        }
        fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, _: V) -> Result<V::Value, Error> {
            Err(de::Error::custom("deserialize_tuple"))
        }
        fn deserialize_tuple_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            _: usize,
            _: V,
        ) -> Result<V::Value, Error> {
            Err(de::Error::custom("deserialize_tuple_struct"))
        }
        fn deserialize_enum<V: Visitor<'de>>(
            self,
            _: &'static str,
            _: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Error> {
            Err(de::Error::custom("deserialize_enum"))
        }
        named! {
            deserialize_any deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32
            deserialize_i64 deserialize_i128 deserialize_u8 deserialize_u16 deserialize_u32
            deserialize_u64 deserialize_u128 deserialize_f32 deserialize_f64 deserialize_char
            deserialize_str deserialize_string deserialize_bytes deserialize_byte_buf
            deserialize_unit deserialize_seq deserialize_map deserialize_identifier
            deserialize_ignored_any
        }
    }
}
