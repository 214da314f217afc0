//! SIGTERM / SIGINT ask for a graceful stop, SIGHUP for a configuration reload.
//! signal-hook runs the handlers on its own thread and forwards them into the runtime.

use std::time::{Duration, Instant};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals as Iter;
use tokio::sync::mpsc;

/// A stop signal this soon after the last one is the same stop: a supervisor that signals the
/// process and then its process group (coreutils' `timeout`) sends two at once, and the
/// second would otherwise end the stop without waiting. An operator's second Ctrl-C comes later.
const SAME_STOP: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM or SIGINT; the name is for the log.
    Stop(&'static str),
    Reload,
}

pub struct Signals {
    rx: mpsc::UnboundedReceiver<Signal>,
}

impl Signals {
    /// Installs the handlers: from here on these signals no longer kill the process.
    pub fn install() -> anyhow::Result<Signals> {
        let mut iter = Iter::new([SIGTERM, SIGINT, SIGHUP])?;
        let (tx, rx) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("waq-signals".into())
            .spawn(move || {
                let mut last_stop: Option<Instant> = None;
                for sig in iter.forever() {
                    let s = match sig {
                        SIGHUP => Signal::Reload,
                        SIGINT => Signal::Stop("SIGINT"),
                        _ => Signal::Stop("SIGTERM"),
                    };
                    if matches!(s, Signal::Stop(_)) {
                        let now = Instant::now();
                        if last_stop.is_some_and(|at| now.duration_since(at) < SAME_STOP) {
                            continue;
                        }
                        last_stop = Some(now);
                    }
                    if tx.send(s).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Signals { rx })
    }

    /// The next signal; pends forever once the forwarding thread is gone.
    pub async fn next(&mut self) -> Signal {
        match self.rx.recv().await {
            Some(s) => s,
            None => std::future::pending().await,
        }
    }

    /// The next SIGTERM / SIGINT, ignoring reloads.
    pub async fn next_stop(&mut self) -> &'static str {
        loop {
            if let Signal::Stop(name) = self.next().await {
                return name;
            }
        }
    }
}
