//! `waq serve`: wires configuration, store, dispatcher and the socket server together, and
//! handles signals (SIGTERM / SIGINT: graceful stop; SIGHUP: reload the configuration).
//!
//! The steps are separate functions (`start`, `Running::reload`, `Running::stop`); `serve`
//! strings them together with the service manager's protocol around them: a socket-activated
//! listener passed to `start`, READY=1 after it, the watchdog while running, STOPPING=1 before
//! `stop`.

mod logging;
mod notify;
mod signals;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api;
use crate::app::App;
use crate::config::{Config, StoreConfig};
use crate::dispatch::Dispatcher;
use crate::store::Store;

pub use signals::{Signal, Signals};

/// How long connections get to finish their request once a stop is asked for.
const REQUEST_GRACE: Duration = Duration::from_secs(10);

/// Runs the daemon in the foreground until SIGTERM / SIGINT; returns after a clean stop.
/// A configuration error comes back as a `ConfigError` (callers exit 2 on it).
pub async fn serve(config_path: &Path, json_logs_override: Option<bool>) -> anyhow::Result<()> {
    ignore_file_size_signal();
    let cfg = Config::load(config_path)?;
    logging::init(&cfg.log, json_logs_override)?;
    // Read at start only: the environment does not change under a running daemon.
    for warning in crate::config::misspelt_overrides(&cfg, std::env::vars_os()) {
        tracing::warn!("{warning}");
    }
    // Before anything slow, so a stop asked for during start-up is not lost.
    let mut signals = Signals::install().context("cannot install signal handlers")?;
    let inherited = crate::systemd::take_listener().context("socket activation")?;
    let running = start(cfg, config_path, inherited).await?;
    notify::state("READY=1\nSTATUS=serving");
    notify::spawn_watchdog(running.app.clone());
    loop {
        match signals.next().await {
            Signal::Reload => running.reload(),
            Signal::Stop(name) => {
                tracing::info!(
                    signal = name,
                    "stopping: finishing in-flight requests and commits"
                );
                break;
            }
        }
    }
    // The stop may take longer than the unit's TimeoutStopSec when requests to Meta are slow
    // (api.request_timeout_ms can be minutes): ask for the time it may need, not a SIGKILL.
    notify::state(&format!(
        "STOPPING=1\nEXTEND_TIMEOUT_USEC={}",
        running.longest_stop().as_micros()
    ));
    tokio::select! {
        r = running.stop() => r,
        name = signals.next_stop() => {
            // A second stop signal: the operator does not want to wait. Everything already
            // answered is durable, so leaving now loses nothing that was promised.
            tracing::warn!(signal = name, "second stop signal: exiting without waiting");
            std::process::exit(1);
        }
    }
}

/// A write past RLIMIT_FSIZE raises SIGXFSZ, whose default action kills the process on the
/// spot. Ignored, the write fails with EFBIG instead, which the store reports as a full disk
/// (507) and the daemon lives on.
fn ignore_file_size_signal() {
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler code.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// The running daemon: what `stop` needs to wind it down.
pub struct Running {
    app: Arc<App>,
    config_path: PathBuf,
    /// What the keys read only at start were when it started.
    started: StartOnly,
    stop_server: watch::Sender<bool>,
    server: JoinHandle<()>,
    webhook: Option<JoinHandle<anyhow::Result<()>>>,
    dispatcher: tokio::sync::oneshot::Receiver<()>,
}

/// Opens everything and starts serving. `inherited` is a listener the service manager opened
/// (socket activation); without it the socket is bound from the configuration.
pub async fn start(
    cfg: Config,
    config_path: &Path,
    inherited: Option<std::os::unix::net::UnixListener>,
) -> anyhow::Result<Running> {
    let started = StartOnly::of(&cfg);
    // The socket first: a live daemon on it is the likeliest start-up mistake, and says so.
    let listener = api::bind(&cfg.socket, inherited)?;
    // Then the store: a second daemon on the same state_dir (whose webhook port would clash
    // too) is told about the lock, the cause, rather than the port.
    let (dir, store_cfg) = (cfg.state_dir.clone(), cfg.store.clone());
    let opening = std::time::Instant::now();
    let store = tokio::task::spawn_blocking(move || Store::open(&dir, &store_cfg))
        .await?
        .with_context(|| {
            format!(
                "state_dir: cannot open the store in {}",
                cfg.state_dir.display()
            )
        })?;
    let webhook_listener = match &cfg.webhook {
        Some(w) => Some(
            tokio::net::TcpListener::bind(&w.listen)
                .await
                .with_context(|| format!("webhook.listen: cannot listen on {}", w.listen))?,
        ),
        None => None,
    };
    let dispatcher = Dispatcher::new(&cfg).context("api: cannot build the Graph API client")?;
    let (opened, scanning) = (opening.elapsed(), std::time::Instant::now());
    let (recovering_store, recovering) = (store.clone(), dispatcher.clone());
    let (total, pending) = tokio::task::spawn_blocking(move || {
        // Meta still counts the requests made just before the stop: the pair budgets and
        // windows of departures start from them, read in the same scan.
        let mut recent = recovering.recent_departures();
        let (total, parts) = recovering_store.recover_in_parts(
            || crate::dispatch::RecoveredPart::new(&recent),
            |part, m| recovering.recover(part, &m),
        )?;
        let pending = recovering.recovered(parts, &mut recent);
        let requests = recent.len();
        let held = recovering.seed(recent);
        if requests > 0 {
            tracing::info!(
                requests,
                recipients_held_back = held,
                "rate limits resume from the requests made before the restart"
            );
        }
        Ok::<_, crate::store::StoreError>((total, pending))
    })
    .await?
    .context("state_dir: cannot read the stored messages")?;
    let scanned = scanning.elapsed();

    let socket_path = served_socket(&listener, &cfg.socket.path);
    let senders = cfg.sender_names().join(",");
    let app = App::new(cfg, store, dispatcher.clone());
    let dispatcher = dispatcher
        .start(app.clone())
        .context("cannot start the dispatcher's thread")?;
    let (stop_server, stopping) = watch::channel(false);
    // The listener logs its own "ready" line (address and path) once it serves.
    let webhook = webhook_listener.map(|l| {
        let mut stopping = stopping.clone();
        let shutdown = async move {
            let _ = stopping.wait_for(|stop| *stop).await;
        };
        tokio::spawn(crate::webhook::serve(app.clone(), l, shutdown))
    });
    let server = tokio::spawn(api::run(listener, app.clone(), stopping, REQUEST_GRACE));
    tracing::info!(
        socket = %socket_path,
        // Absolute, so a relative path in the file is seen as what it became.
        state_dir = %std::fs::canonicalize(&app.config().state_dir)
            .unwrap_or_else(|_| app.config().state_dir.clone())
            .display(),
        messages = total,
        pending,
        // Where a slow start went: opening the store (sled's recovery) and reading every record.
        store_open_ms = opened.as_millis() as u64,
        recovery_scan_ms = scanned.as_millis() as u64,
        senders = %senders,
        version = env!("CARGO_PKG_VERSION"),
        "waq is serving"
    );
    warn_of_risky_values(&app.config());
    Ok(Running {
        app,
        config_path: config_path.to_path_buf(),
        started,
        stop_server,
        server,
        webhook,
        dispatcher,
    })
}

/// The socket's path for the start line, absolute. One passed in by the service manager is
/// named as such, with a warning when it is not `socket.path`: clients find the socket by
/// that path.
fn served_socket(listener: &api::Listener, configured: &Path) -> String {
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    if let Some(p) = listener.local_path() {
        return absolute(p).display().to_string();
    }
    match listener.inherited_path() {
        Some(p) => {
            if absolute(&p) != absolute(configured) {
                tracing::warn!(
                    inherited = %p.display(),
                    socket_path = %absolute(configured).display(),
                    "the socket passed in by the service manager is not socket.path: clients \
                     that look for socket.path will not find the daemon; make the two the same"
                );
            }
            format!("{} (inherited)", absolute(&p).display())
        }
        None => "(inherited)".into(),
    }
}

/// Values allowed but likely to hurt, said at every start and reload: tokens sent over plain
/// HTTP beyond this machine can be read on the way (allowed for a simulator elsewhere on a
/// private network), and the configuration's own `cautions`.
fn warn_of_risky_values(cfg: &Config) {
    if crate::cloud::cleartext_beyond_loopback(&cfg.api.base_url) {
        tracing::warn!(
            base_url = %cfg.api.base_url,
            "api.base_url is plain http:// to another machine: the senders' access tokens \
             travel unencrypted; use https:// unless this is a simulator on a trusted network"
        );
    }
    for caution in cfg.cautions() {
        tracing::warn!("{caution}");
    }
}

impl Running {
    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// Re-reads the configuration file. A broken file is logged and the running configuration
    /// stays; a good one is applied to new requests and to the dispatcher (rates, tokens).
    pub fn reload(&self) {
        // A pipe (`--config <(…)`, a FIFO) was read at start; opening a FIFO again would block
        // this loop, and with it every signal, until something writes to it.
        if let Ok(meta) = std::fs::metadata(&self.config_path) {
            use std::os::unix::fs::FileTypeExt;
            let kind = meta.file_type();
            if kind.is_fifo() || kind.is_char_device() || kind.is_socket() {
                tracing::error!(
                    path = %self.config_path.display(),
                    "reload refused: the configuration is not a regular file (a pipe is read \
                     once, at start); keeping the running configuration: restart to change it"
                );
                let why = "the configuration is not a regular file; restart to change it";
                notify::reload_outcome(&self.app, Some(why.into()));
                return;
            }
        }
        let new = match Config::load(&self.config_path) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("reload failed, keeping the running configuration: {e}");
                notify::reload_outcome(&self.app, Some(e.to_string()));
                return;
            }
        };
        let old = self.app.config();
        for key in self.started.changed_in(&new) {
            tracing::warn!(
                key,
                "changed in the file, but takes effect only at the next start"
            );
        }
        if old.log.level != new.log.level {
            match logging::set_level(&new.log.level) {
                Ok(()) => tracing::info!(level = %new.log.level, "log level changed"),
                Err(e) => tracing::error!("cannot change the log level: {e}"),
            }
        }
        warn_of_risky_values(&new);
        self.app.dispatcher.reload(&new);
        self.app.replace_config(new);
        tracing::info!(path = %self.config_path.display(), "configuration reloaded");
        notify::reload_outcome(&self.app, None);
    }

    /// How long the dispatcher may wait for its requests in flight at a stop.
    fn dispatch_grace(&self) -> Duration {
        self.app.config().api.request_timeout + Duration::from_secs(5)
    }

    /// How long a graceful stop may take: the requests of the socket and of the webhook
    /// listener (which stop together), then the dispatcher's, then a margin for the final
    /// flush, which has no bound of its own (a disk that hangs is the watchdog's business).
    pub fn longest_stop(&self) -> Duration {
        REQUEST_GRACE + self.dispatch_grace() + Duration::from_secs(10)
    }

    /// Graceful stop: refuse new work, finish in-flight requests (and so their commits), let
    /// the dispatcher finish its in-flight sends, flush the store.
    pub async fn stop(self) -> anyhow::Result<()> {
        let dispatch_grace = self.dispatch_grace();
        self.app.begin_shutdown();
        let _ = self.stop_server.send(true);
        let requests_end = tokio::time::Instant::now() + REQUEST_GRACE;
        if let Err(e) = self.server.await {
            tracing::error!(error = %e, "the socket server ended abnormally");
        }
        if let Some(webhook) = self.webhook {
            // Its requests have the socket's grace to finish; one still being read after that
            // (a body trickling in) is left unanswered, and Meta sends it again.
            let end = requests_end.max(tokio::time::Instant::now() + Duration::from_secs(1));
            let mut webhook = webhook;
            match tokio::time::timeout_at(end, &mut webhook).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => tracing::error!(error = %e, "the webhook listener failed"),
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "the webhook listener ended abnormally")
                }
                Err(_) => {
                    webhook.abort();
                    tracing::warn!(
                        "the webhook listener still had a request in progress; left unanswered"
                    )
                }
            }
        }
        // The dispatcher waits for its in-flight requests, each bounded by the request timeout.
        let in_flight = self.app.dispatcher.in_flight();
        if in_flight > 0 {
            tracing::info!(
                in_flight,
                at_most_s = dispatch_grace.as_secs(),
                "waiting for the requests in flight to Meta"
            );
        }
        match tokio::time::timeout(dispatch_grace, self.dispatcher).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => tracing::error!("the dispatcher's thread ended abnormally"),
            Err(_) => tracing::warn!(
                "the dispatcher did not finish in time; its pending sends resume at the next start"
            ),
        }
        let store = self.app.store.clone();
        tokio::task::spawn_blocking(move || store.flush_blocking())
            .await?
            .context("the final flush of the store failed")?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// The keys read only at start, with the values the daemon runs with. A reload compares the
/// file with these, not with the file it replaces: a change still waiting for a restart is
/// named at every reload, and one reverted is no longer.
#[derive(Debug, Clone, PartialEq)]
struct StartOnly {
    state_dir: PathBuf,
    socket_path: PathBuf,
    socket_mode: u32,
    max_connections: usize,
    max_body_memory_bytes: usize,
    max_in_flight: usize,
    store: StoreConfig,
    log_json: bool,
    webhook_listen: Option<String>,
}

impl StartOnly {
    fn of(cfg: &Config) -> StartOnly {
        StartOnly {
            state_dir: cfg.state_dir.clone(),
            socket_path: cfg.socket.path.clone(),
            socket_mode: cfg.socket.mode,
            max_connections: cfg.socket.max_connections,
            max_body_memory_bytes: cfg.socket.max_body_memory_bytes,
            max_in_flight: cfg.dispatch.max_in_flight,
            store: cfg.store.clone(),
            log_json: cfg.log.json,
            webhook_listen: cfg.webhook.as_ref().map(|w| w.listen.clone()),
        }
    }

    /// The keys whose value in `new` is not the one running.
    fn changed_in(&self, new: &Config) -> Vec<&'static str> {
        let new = StartOnly::of(new);
        let mut changed = Vec::new();
        if self.state_dir != new.state_dir {
            changed.push("state_dir");
        }
        if self.socket_path != new.socket_path {
            changed.push("socket.path");
        }
        if self.socket_mode != new.socket_mode {
            changed.push("socket.mode");
        }
        if self.max_connections != new.max_connections {
            changed.push("socket.max_connections");
        }
        if self.max_body_memory_bytes != new.max_body_memory_bytes {
            changed.push("socket.max_body_memory_bytes");
        }
        if self.max_in_flight != new.max_in_flight {
            changed.push("dispatch.max_in_flight");
        }
        if self.store.cache_capacity_bytes != new.store.cache_capacity_bytes {
            changed.push("store.cache_capacity_mb");
        }
        if self.store.flush_every_ms != new.store.flush_every_ms {
            changed.push("store.flush_every_ms");
        }
        if self.log_json != new.log_json {
            changed.push("log.format");
        }
        if self.webhook_listen != new.webhook_listen {
            changed.push("webhook.listen");
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let text = format!(
            "state_dir = \"/tmp/waq-test\"\n{extra}\n[[senders]]\nname = \"main\"\n\
             phone_number_id = \"1\"\ntoken = \"t\"\n"
        );
        Config::from_toml(&text, Path::new("/")).unwrap()
    }

    #[test]
    fn a_reload_names_each_key_read_only_at_start() {
        let started = StartOnly::of(&config(""));
        assert!(started.changed_in(&config("")).is_empty());
        // Rates apply at once; these do not.
        assert!(started
            .changed_in(&config("[dispatch]\nglobal_mps = 5\n"))
            .is_empty());
        for (extra, key) in [
            ("[dispatch]\nmax_in_flight = 3\n", "dispatch.max_in_flight"),
            (
                "[store]\ncache_capacity_mb = 64\n",
                "store.cache_capacity_mb",
            ),
            ("[store]\nflush_every_ms = 0\n", "store.flush_every_ms"),
            ("[socket]\nmax_connections = 7\n", "socket.max_connections"),
            (
                "[socket]\nmax_body_memory_bytes = 100000000\n",
                "socket.max_body_memory_bytes",
            ),
        ] {
            assert_eq!(started.changed_in(&config(extra)), vec![key], "{extra}");
        }
    }
}
