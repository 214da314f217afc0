//! The dispatcher: per sender, picks the next due message whose recipient lane is free, within
//! the sender's MPS and the pair limit, applies the window rule, sends it through the cloud client
//! and records the outcome.
//!
//! `queue` is the pure schedule, `rate` and `pair` the limits, `backoff` the retry delays,
//! `attempt` one request and its outcome, `sender` the loop that ties them together, `recent`
//! the departures before a restart that the limits start from.

mod attempt;
mod backoff;
mod departures;
mod global;
pub mod messaging_limit;
mod pair;
pub mod queue;
mod rate;
mod reach;
mod recent;
mod recovery;
mod retention;
mod sender;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use serde::Serialize;
use tokio::sync::{oneshot, Semaphore};

use crate::app::App;
use crate::cloud::{ClientOptions, CloudClient, Proxy};
use crate::config::Config;
use crate::model::{Message, State};
use crate::store::{Store, StoreError};

use queue::{Entry, PairLimit};
use sender::SenderState;

pub(crate) use attempt::{
    after_failure, fallback_would_go, is_app_wide_throttle, is_throttle, retries_after,
    FAILED_STATUS_PREFIX,
};
pub use rate::WINDOW as RATE_WINDOW;
pub use recent::RecentDepartures;
pub use recovery::RecoveredPart;

/// What `/v1/stats` and `/v1/health` show of the dispatcher.
#[derive(Debug, Clone, Serialize, Default)]
pub struct DispatchSnapshot {
    pub in_flight: usize,
    pub senders: Vec<SenderSnapshot>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct SenderSnapshot {
    pub name: String,
    /// False for a sender the configuration no longer names that still holds messages.
    pub configured: bool,
    /// `None` when not configured.
    pub phone_number_id: Option<String>,
    /// Configured messages per second (0 when not configured).
    pub mps: u32,
    /// The rate in force now (lower than `mps` after Meta asked to slow down).
    pub effective_mps: f64,
    /// Requests started in the last second.
    pub sent_last_second: u32,
    pub in_flight: usize,
    /// Messages waiting in this sender's scheduler.
    pub queued: usize,
    pub paused: bool,
    pub pause_reason: Option<String>,
    /// Set while the sender's requests do not reach the Graph API (no answer at all).
    pub unreachable: Option<reach::Unreachable>,
    /// With `messaging_limit` set: its portfolio's count of users reached outside a window.
    pub messaging_limit: Option<messaging_limit::MessagingLimitSnapshot>,
}

impl SenderSnapshot {
    /// Whether the sender has messages waiting or in flight.
    pub fn holds_messages(&self) -> bool {
        self.queued > 0 || self.in_flight > 0
    }
}

/// State shared by the sender loops and their attempts.
pub(crate) struct Shared {
    in_flight: Arc<Semaphore>,
    in_flight_limit: usize,
    global: global::GlobalGate,
    cloud: RwLock<CloudClient>,
    pair: RwLock<PairLimit>,
    /// The portfolios' users reached outside a window (Meta's messaging limit).
    limits: messaging_limit::MessagingLimits,
}

impl Shared {
    fn pair_limit(&self) -> PairLimit {
        *self.pair.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The HTTP client, the one built by the last configuration that could build it.
    fn cloud(&self) -> CloudClient {
        self.cloud.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[derive(Clone)]
pub struct Dispatcher {
    shared: Arc<Shared>,
    senders: Arc<RwLock<HashMap<String, Arc<SenderState>>>>,
    tasks: Arc<Mutex<tokio::task::JoinSet<()>>>,
    /// Set by `run`: lets `reload` start loops for senders added to the configuration, on the
    /// dispatcher's own runtime.
    running: Arc<Mutex<Option<Running>>>,
}

/// The app the loops serve, and the runtime they run on.
type Running = (std::sync::Weak<App>, tokio::runtime::Handle);

fn client_options(config: &Config) -> ClientOptions {
    ClientOptions {
        base_url: config.api.base_url.clone(),
        version: config.api.version.clone(),
        request_timeout: config.api.request_timeout,
        connect_timeout: config.api.connect_timeout,
        max_idle_per_host: config.dispatch.max_in_flight,
        extra_roots_pem: config.api.extra_roots_pem.clone(),
        proxy: Proxy::FromEnvironment,
    }
}

impl Dispatcher {
    /// Fails when the Graph API client cannot be built (an unusable proxy in the environment,
    /// say): a daemon that could never send should not start.
    pub fn new(config: &Config) -> anyhow::Result<Dispatcher> {
        let cloud = CloudClient::new(client_options(config))?;
        let global = global::GlobalGate::new(config.dispatch.global_mps);
        let senders = config
            .senders
            .iter()
            .map(|s| (s.name.clone(), Arc::new(SenderState::new(s.clone()))))
            .collect();
        Ok(Dispatcher {
            shared: Arc::new(Shared {
                in_flight: Arc::new(Semaphore::new(config.dispatch.max_in_flight)),
                in_flight_limit: config.dispatch.max_in_flight,
                global,
                cloud: RwLock::new(cloud),
                pair: RwLock::new(pair_limit(config)),
                limits: messaging_limit::MessagingLimits::default(),
            }),
            senders: Arc::new(RwLock::new(senders)),
            tasks: Arc::new(Mutex::new(tokio::task::JoinSet::new())),
            running: Arc::new(Mutex::new(None)),
        })
    }

    fn sender(&self, name: &str) -> Option<Arc<SenderState>> {
        self.senders
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// The sender named `name`; one that is not configured is made to hold its messages (a
    /// message found at start, or retried, for a sender no longer in the configuration).
    fn sender_or_held(&self, name: &str) -> Arc<SenderState> {
        if let Some(sender) = self.sender(name) {
            return sender;
        }
        let mut senders = self.senders.write().unwrap_or_else(|p| p.into_inner());
        if let Some(sender) = senders.get(name) {
            return sender.clone();
        }
        tracing::warn!(
            sender = name,
            "messages for a sender that is not configured are held, unsent, until a configuration names it again"
        );
        let state = Arc::new(SenderState::held(name));
        senders.insert(name.to_string(), state.clone());
        self.spawn_loop(state.clone());
        state
    }

    /// Whether `name` is a sender no longer configured that still holds messages: they can
    /// be listed and cancelled by its name.
    pub fn holds(&self, name: &str) -> bool {
        self.sender(name)
            .is_some_and(|s| !s.is_configured() && s.snapshot().holds_messages())
    }

    /// Schedules a message that is durable in the store (new, recovered or retried). Cheap.
    pub fn submit(&self, m: &Message) {
        self.sender_or_held(&m.sender)
            .push(&entry(m), self.shared.pair_limit());
    }

    /// [`submit`](Self::submit) for many messages (a batch): one look-up of the sender and
    /// one lock of its schedule per run of messages for the same sender.
    pub fn submit_all<'m>(&self, messages: impl IntoIterator<Item = &'m Message>) {
        let mut run: Vec<Entry> = Vec::new();
        let mut run_of: Option<&'m Message> = None;
        for m in messages {
            if run_of.is_some_and(|first| first.sender != m.sender) {
                self.submit_run(run_of, &mut run);
            }
            if run.is_empty() {
                run_of = Some(m);
            }
            run.push(entry(m));
        }
        self.submit_run(run_of, &mut run);
    }

    /// Schedules `run` (messages for the sender of `first`) and empties it.
    fn submit_run(&self, first: Option<&Message>, run: &mut Vec<Entry>) {
        let Some(first) = first else { return };
        let sender = self.sender_or_held(&first.sender);
        // A few hundred at a time: the sender's loop waits for the lock to pick its next.
        run.chunks(PUSHES_PER_LOCK)
            .for_each(|chunk| sender.push_all(chunk, self.shared.pair_limit()));
        run.clear();
    }

    /// Starts gathering the departures that the limits must remember at a start (pass it
    /// every stored message, then to [`seed`](Self::seed)).
    pub fn recent_departures(&self) -> RecentDepartures {
        RecentDepartures::new(crate::model::now_ms(), self.shared.pair_limit())
    }

    /// Starts each recipient's pair budget and each sender's window of departures from the
    /// requests made before a restart, before the loops run: Meta still counts them. Answers
    /// how many recipients are held back by their budget.
    pub fn seed(&self, recent: RecentDepartures) -> usize {
        let pair = self.shared.pair_limit();
        let (now_ms, now) = (crate::model::now_ms(), std::time::Instant::now());
        let mut lanes = 0;
        for (name, departures) in recent.senders {
            if let Some(sender) = self.sender(&name) {
                lanes += sender.seed(departures, now_ms, now, pair, &self.shared.global);
            }
        }
        lanes
    }

    /// Takes a message that left the queue unsent (cancelled) out of its sender's schedule at
    /// once, so the sender's `queued` counts only what is still to be sent. One already picked
    /// is left to its attempt.
    pub fn withdraw(&self, m: &Message) {
        // Only a message that was `queued` can have been parked for its `send_at`; a retrying
        // one waits in its lane.
        let was = m.history.iter().rev().nth(1).map(|h| h.state);
        let parked_until = (was == Some(State::Queued)).then_some(m.next_attempt_at_ms);
        if let Some(sender) = self.sender(&m.sender) {
            let pair = self.shared.pair_limit();
            sender.lock().queue.remove(
                m.id,
                &m.to,
                m.priority,
                parked_until,
                crate::model::now_ms(),
                pair,
            );
        }
    }

    /// `to`'s window with sender `name` is open: a message to them held by the messaging
    /// limit may go now, and the ones behind it.
    pub fn release_hold(&self, name: &str, to: &str) {
        if let Some(sender) = self.sender(name) {
            let pair = self.shared.pair_limit();
            let released = sender
                .lock()
                .queue
                .release_hold(to, crate::model::now_ms(), pair);
            if released {
                sender.wake.notify_one();
            }
        }
    }

    /// Meta reported a throttle for `name` outside an answer (a `failed` status): its rate
    /// is lowered as after a throttle in an answer.
    pub fn throttled(&self, name: &str) {
        if let Some(sender) = self.sender(name) {
            sender.lock().aimd.throttled(std::time::Instant::now());
        }
    }

    /// Meta reported an account error for `name` outside an answer (a `failed` status of a
    /// message sent at `sent_at_ms`): the sender pauses as after one in an answer, unless it
    /// was resumed or reloaded since that send (which may have brought the fix).
    pub fn account_failed(&self, name: &str, reason: &str, sent_at_ms: u64) {
        let Some(sender) = self.sender(name).filter(|s| s.is_configured()) else {
            return;
        };
        let ago =
            std::time::Duration::from_millis(crate::model::now_ms().saturating_sub(sent_at_ms));
        let sent = std::time::Instant::now().checked_sub(ago);
        let mut s = sender.lock();
        if s.resumed_at.is_some_and(|r| sent.is_none_or(|t| r > t)) {
            tracing::info!(sender = name, "a message sent before the sender was resumed failed for the account; staying resumed");
            return;
        }
        s.pause(name, reason);
    }

    /// Meta's throttle for the whole app or business account (4, 17, 32, 613, 80000-80014:
    /// `cloud::is_app_wide_throttle_code`) came to `name`: every
    /// other configured sender with the same token (so of the same app) slows down too, as
    /// after a throttle of its own.
    pub fn throttle_others_of_app(&self, name: &str) {
        let Some(token) = self
            .sender(name)
            .map(|s| s.config().token.expose().to_string())
        else {
            return;
        };
        let others: Vec<Arc<SenderState>> = self
            .senders
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|s| s.name != name && s.is_configured())
            .cloned()
            .collect();
        let now = std::time::Instant::now();
        for other in others {
            if other.config().token.expose() == token {
                other.lock().aimd.throttled(now);
            }
        }
    }

    /// Resumes a sender paused by its circuit breaker. `Err` names the problem (unknown
    /// sender, or one that is not paused: answering "resumed" would claim a change that did
    /// not happen).
    pub fn resume_sender(&self, name: &str) -> Result<(), String> {
        let sender = self
            .sender(name)
            .filter(|s| s.is_configured())
            .ok_or_else(|| format!("no sender named `{name}` is configured"))?;
        let Some(reason) = sender.lock().resume() else {
            return Err(format!(
                "sender `{name}` is not paused, so there is nothing to resume"
            ));
        };
        tracing::info!(sender = name, "sender resumed (was paused: {reason})");
        sender.wake.notify_one();
        Ok(())
    }

    /// Applies a reloaded configuration: senders' tokens and rates, limits, the API endpoint;
    /// new senders start. Paused senders resume (a reload is how a fixed token arrives). A
    /// sender left out stops sending and holds its messages until a configuration names it
    /// again.
    pub fn reload(&self, config: &Config) {
        match CloudClient::new(client_options(config)) {
            Ok(c) => *self.shared.cloud.write().unwrap_or_else(|p| p.into_inner()) = c,
            Err(e) => tracing::error!("cannot rebuild the HTTP client, keeping the old one: {e}"),
        }
        *self.shared.pair.write().unwrap_or_else(|p| p.into_inner()) = pair_limit(config);
        self.shared.global.set_limit(config.dispatch.global_mps);
        let mut senders = self.senders.write().unwrap_or_else(|p| p.into_inner());
        for s in &config.senders {
            match senders.get(&s.name) {
                Some(state) => {
                    let was_configured = state.is_configured();
                    // Resumed after the new configuration is in: an attempt that read the old
                    // token is then one started before the resume, whose 190 pauses nothing.
                    state.configure(s.clone());
                    let was = state.lock().resume();
                    if let Some(reason) = was {
                        tracing::info!(sender = %s.name, "sender resumed by reload (was paused: {reason})");
                    }
                    if !was_configured {
                        let queued = state.lock().queue.waiting();
                        tracing::info!(sender = %s.name, queued, "sender configured again: its held messages are sent");
                    }
                }
                None => {
                    let state = Arc::new(SenderState::new(s.clone()));
                    senders.insert(s.name.clone(), state.clone());
                    self.spawn_loop(state);
                    tracing::info!(sender = %s.name, "new sender configured and started");
                }
            }
        }
        for (name, state) in senders.iter() {
            if state.is_configured() && config.sender(name).is_none() {
                state.unconfigure();
                let queued = state.lock().queue.waiting();
                tracing::warn!(
                    sender = %name,
                    queued,
                    "sender removed from the configuration: it sends nothing more, and its messages are held, unsent, until a configuration names it again"
                );
            }
        }
    }

    /// Runs `state`'s loop on the dispatcher's runtime, once that runs (`run` starts the loops
    /// of the senders known by then).
    fn spawn_loop(&self, state: Arc<SenderState>) {
        let running = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(|(app, rt)| Some((app.upgrade()?, rt.clone())));
        if let Some((app, rt)) = running {
            rt.spawn(sender::run_loop(
                app,
                self.shared.clone(),
                state,
                self.tasks.clone(),
            ));
        }
    }

    /// The senders' state, with their messaging limits' counts read from `store` (also while
    /// the loops are not yet running: a start's first `/v1/stats` shows them too).
    pub fn snapshot(&self, store: &Store) -> DispatchSnapshot {
        let senders: Vec<SenderSnapshot> = {
            let map = self.senders.read().unwrap_or_else(|p| p.into_inner());
            // A sender no longer configured shows while it holds messages, so that the
            // senders' counts add up to the queue's.
            let now = crate::model::now_ms();
            let mut v: Vec<_> = map
                .values()
                .map(|s| {
                    s.snapshot_with(|cfg| {
                        let limit = cfg.messaging_limit?;
                        self.shared
                            .limits
                            .snapshot(store, &cfg.portfolio, limit, now)
                    })
                })
                .filter(|s| s.configured || s.holds_messages())
                .collect();
            v.sort_by(|a, b| a.name.cmp(&b.name));
            v
        };
        DispatchSnapshot {
            in_flight: self.in_flight(),
            senders,
        }
    }

    /// Requests to Meta in flight now.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight_limit - self.shared.in_flight.available_permits()
    }

    /// The oldest heartbeat (Unix ms) of the sender loops: a stuck loop shows as an old value.
    pub fn heartbeat_ms(&self) -> u64 {
        self.senders
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|s| s.heartbeat_ms.load(std::sync::atomic::Ordering::Relaxed))
            .min()
            .unwrap_or_else(crate::model::now_ms)
    }

    /// Starts the scheduling loops on a thread of their own (see [`Dispatcher::run`]). The
    /// receiver completes when they have ended: `Err` if the thread died (a panic).
    ///
    /// One thread with a single-threaded runtime: every send is a handful of short wake-ups
    /// (pick, commit, departure, answer), and on a multi-threaded runtime each of them could
    /// wake a second worker to steal it. Alone on one thread, CPU per message fell by about a
    /// fifth (docs/PERFORMANCE.md, change 14); the socket server keeps the main runtime.
    pub fn start(self, app: Arc<App>) -> std::io::Result<oneshot::Receiver<()>> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("waq-dispatch-io")
            .build()?;
        let (done, finished) = oneshot::channel();
        std::thread::Builder::new()
            .name("waq-dispatch".into())
            .spawn(move || {
                runtime.block_on(self.run(app));
                let _ = done.send(());
            })?;
        Ok(finished)
    }

    /// The scheduling loops; returns when `app` is shutting down and in-flight sends are done
    /// (bound the wait with a timeout: a hung request should not hold the stop forever).
    pub async fn run(self, app: Arc<App>) {
        let mut loops = tokio::task::JoinSet::new();
        let senders: Vec<Arc<SenderState>> = {
            // Under the registry's lock: a sender added meanwhile gets its loop from here or
            // from `spawn_loop`, not from both.
            let map = self.senders.read().unwrap_or_else(|p| p.into_inner());
            *self.running.lock().unwrap_or_else(|p| p.into_inner()) =
                Some((Arc::downgrade(&app), tokio::runtime::Handle::current()));
            map.values().cloned().collect()
        };
        for s in senders {
            loops.spawn(sender::run_loop(
                app.clone(),
                self.shared.clone(),
                s,
                self.tasks.clone(),
            ));
        }
        loops.spawn(retention::run(app.clone()));
        loops.spawn(resync_after_reopen(app.clone(), self.clone()));
        while loops.join_next().await.is_some() {}
        // Let in-flight attempts record their outcomes.
        loop {
            let next = {
                let mut set = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
                if set.is_empty() {
                    break;
                }
                // Poll one task at a time without holding the lock across the await.
                std::mem::take(&mut *set)
            };
            let mut set = next;
            while set.join_next().await.is_some() {}
        }
    }
}

fn pair_limit(config: &Config) -> PairLimit {
    PairLimit {
        interval_ms: config.dispatch.pair_interval.as_millis() as u64,
        burst: config.dispatch.pair_burst,
    }
}

/// After the store reopened itself (an I/O error such as a full disk), writes made since the
/// last commit are gone: the schedule is brought back in line with what the store holds. The
/// limits are not seeded again: this process's own budgets and windows saw every request.
async fn resync_after_reopen(app: Arc<App>, dispatcher: Dispatcher) {
    let mut seen = app.store.generation();
    while !app.is_shutting_down() {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let now = app.store.generation();
        if now == seen {
            continue;
        }
        seen = now;
        let (store, d) = (app.store.clone(), dispatcher.clone());
        let result = tokio::task::spawn_blocking(move || d.resync(&store)).await;
        match result {
            Ok(Ok(n)) => tracing::info!(pending = n, "schedule resynced after the store reopened"),
            Ok(Err(e)) => tracing::error!("cannot resync the schedule after a store reopen: {e}"),
            Err(e) => tracing::error!("schedule resync failed: {e}"),
        }
    }
}

impl Dispatcher {
    /// Submits every pending message of `store` again, but those parked in the schedule
    /// already: the schedule cannot tell a parked message without a ttl is there (it keeps no
    /// index of them, to stay small at a million), and one parked twice would count twice
    /// in the sender's `queued` until it falls due. The set of parked ids lives only for the
    /// resync. Returns how many messages are pending.
    pub fn resync(&self, store: &Store) -> Result<u64, StoreError> {
        let mut parked = std::collections::HashSet::new();
        {
            let map = self.senders.read().unwrap_or_else(|p| p.into_inner());
            for sender in map.values() {
                sender.parked_ids(&mut parked);
            }
        }
        // Not `recover`: the store's counts stay as the reopening left them, since messages
        // change state while this scan runs.
        store.for_each_pending(|m| {
            if !parked.contains(&m.id) {
                self.submit(&m);
            }
        })
    }
}

/// Most messages [`Dispatcher::submit_all`] schedules under one lock of a sender's schedule
/// (tens of microseconds).
const PUSHES_PER_LOCK: usize = 256;

/// What the scheduler keeps of a message.
fn entry(m: &Message) -> Entry {
    Entry {
        id: m.id,
        to: m.to.clone(),
        priority: m.priority,
        due_ms: m.next_attempt_at_ms,
        expires_at_ms: m.expires_at_ms,
        retry_at_ms: (m.state == State::Retrying).then_some(m.next_attempt_at_ms),
        held: m.state == State::Retrying
            && m.history
                .last()
                .is_some_and(|h| h.detail.starts_with(attempt::HELD_PREFIX)),
    }
}
