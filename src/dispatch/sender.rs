//! One sender's scheduling loop: pick the next message its limits allow, start the attempt as a
//! task, sleep until something changes. The loop never waits on disk or network itself.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::app::App;
use crate::config::{Secret, SenderConfig};
use crate::model::{now_ms, State};

use super::attempt::{self, AttemptInput, SenderEffect};
use super::departures::Departures;
use super::queue::{Entry, Next, Outcome, PairLimit, SenderQueue};
use super::rate::{Aimd, Pacer, SlidingWindow, WINDOW};
use super::reach::Reach;
use super::recent::SenderDepartures;
use super::{SenderSnapshot, Shared};

/// The longest the loop sleeps, so that it notices shutdown and keeps its heartbeat fresh.
const MAX_SLEEP: Duration = Duration::from_millis(250);

/// Most attempts of one sender between their pick and their request being handed to the HTTP
/// client. Pacing applies at the pick; when the process falls behind (CPU-starved), picked
/// attempts would otherwise pile up before the wire and go out in a bunch later, more than the
/// rate in some second. Bounded, the loop picks only as fast as requests actually leave.
const MAX_STARTING: usize = 16;

pub struct SenderState {
    pub name: String,
    pub config: RwLock<SenderConfig>,
    pub sched: Mutex<Schedule>,
    pub wake: Notify,
    /// Unix ms of the loop's last turn (the systemd watchdog checks it).
    pub heartbeat_ms: std::sync::atomic::AtomicU64,
    /// False once the sender is gone from the configuration (a reload without it, or messages
    /// of it found at start): the loop sends nothing and its messages wait, untouched, until a
    /// configuration names it again.
    configured: AtomicBool,
}

pub struct Schedule {
    pub queue: SenderQueue,
    /// Requests started by the loop (when it picks a message).
    pub window: SlidingWindow,
    pub pacer: Pacer,
    /// Requests that left for Meta (after their `sending` commit): what Meta's mps counts.
    pub departures: Departures,
    pub aimd: Aimd,
    pub paused: Option<String>,
    /// Whether requests get answers lately.
    pub reach: Reach,
    /// Attempts picked whose request has not yet been handed to the HTTP client.
    pub starting: usize,
    /// When the sender was last resumed or reloaded: an attempt started before then that fails
    /// for the account (say 190 with the old token, answered after the reload that brought the
    /// new one) must not pause it.
    pub resumed_at: Option<Instant>,
    /// Until when (Unix ms) the loop sleeps unless woken; 0 while it runs. A message pushed
    /// for later than that needs no wake-up: the loop sees it when it next looks. Set under
    /// the same lock as the loop's decision to sleep, so no push falls between the two.
    pub asleep_until_ms: u64,
}

impl Schedule {
    /// Unpauses; returns the reason it was paused for, if it was. Whether it was or not, the
    /// account errors of attempts started before now no longer pause it: a reload (which
    /// resumes every sender) may have brought the token that fixes them, even before they
    /// paused it.
    pub fn resume(&mut self) -> Option<String> {
        self.resumed_at = Some(Instant::now());
        self.paused.take()
    }

    /// Pauses for an account error, saying so once.
    pub fn pause(&mut self, name: &str, reason: &str) {
        if self.paused.is_none() {
            tracing::error!(sender = %name, "sender paused: {reason}; fix the cause, then reload (SIGHUP) or `waq sender resume {name}`");
        }
        self.paused = Some(reason.to_string());
    }
}

/// Counts one attempt in `Schedule::starting` until dropped; then wakes the loop.
pub struct OnWire {
    sender: Arc<SenderState>,
}

impl Drop for OnWire {
    fn drop(&mut self) {
        {
            let mut s = self.sender.lock();
            s.starting = s.starting.saturating_sub(1);
        }
        self.sender.wake.notify_one();
    }
}

enum Step {
    Send { id: u64, to: Arc<str> },
    Sleep(Option<Instant>),
}

impl SenderState {
    pub fn new(config: SenderConfig) -> Self {
        let mps = config.mps;
        SenderState {
            name: config.name.clone(),
            config: RwLock::new(config),
            sched: Mutex::new(Schedule {
                queue: SenderQueue::new(),
                window: SlidingWindow::new(),
                pacer: Pacer::new(),
                departures: Departures::new(),
                aimd: Aimd::new(mps, Instant::now()),
                paused: None,
                reach: Reach::default(),
                starting: 0,
                resumed_at: None,
                asleep_until_ms: 0,
            }),
            wake: Notify::new(),
            heartbeat_ms: std::sync::atomic::AtomicU64::new(now_ms()),
            configured: AtomicBool::new(true),
        }
    }

    /// A sender no configuration names, for messages of it found in the store: it holds them.
    pub fn held(name: &str) -> Self {
        let state = SenderState::new(SenderConfig {
            name: name.to_string(),
            phone_number_id: String::new(),
            token: Secret::default(),
            mps: 1,
            messaging_limit: None,
            portfolio: name.to_string(),
        });
        state.configured.store(false, Ordering::SeqCst);
        state
    }

    pub fn is_configured(&self) -> bool {
        self.configured.load(Ordering::SeqCst)
    }

    /// Takes the sender out of service: it sends nothing more (an attempt already picked puts
    /// its message back) and its messages stay as they are. A pause goes with it: a sender
    /// configured again starts afresh.
    pub fn unconfigure(&self) {
        self.configured.store(false, Ordering::SeqCst);
        self.lock().resume();
        self.wake.notify_one();
    }

    /// Puts the sender (back) in service with `config`. One that was not configured starts at
    /// its full rate, as a new sender does.
    pub fn configure(&self, config: SenderConfig) {
        {
            let mut s = self.lock();
            if self.is_configured() {
                s.aimd.set_configured(config.mps);
            } else {
                s.aimd = Aimd::new(config.mps, Instant::now());
            }
        }
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = config;
        self.configured.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, Schedule> {
        self.sched.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn config(&self) -> SenderConfig {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Schedules `entry` unless it is already scheduled (a resync after a store reopen
    /// submits every pending message again).
    ///
    /// Wakes the loop only if the message may change what it does before it would wake anyway:
    /// an enqueue for later (a parked send) costs no wake-up of the dispatcher's thread, which
    /// under a stream of such enqueues cost the socket server a third of its messages per fsync.
    pub fn push(&self, entry: &Entry, pair: PairLimit) {
        self.push_all(std::slice::from_ref(entry), pair);
    }

    /// [`push`](Self::push) for several entries: one lock, one wake-up at most.
    pub fn push_all(&self, entries: &[Entry], pair: PairLimit) {
        let wake = {
            let mut s = self.lock();
            let now = now_ms();
            let mut wake = false;
            for entry in entries {
                if s.queue.contains(entry.id, &entry.to, entry.priority) {
                    continue;
                }
                s.queue.push(entry, now, pair);
                let before = s.asleep_until_ms;
                wake |= entry.due_ms < before
                    || entry.retry_at_ms.is_some()
                    || entry.expires_at_ms.is_some_and(|e| e < before);
            }
            wake
        };
        if wake {
            self.wake.notify_one();
        }
    }

    /// Starts the pair budgets and the windows of departures from the requests made before a
    /// restart (see `recent`). Answers how many recipients are held back by their budget.
    pub(super) fn seed(
        &self,
        departures: SenderDepartures,
        now_ms: u64,
        now: Instant,
        pair: PairLimit,
        global: &super::global::GlobalGate,
    ) -> usize {
        let mut s = self.lock();
        let mut lanes = 0;
        let since_ms = departures.since_ms;
        for (to, mut sent) in departures.pairs {
            sent.sort_unstable();
            lanes += usize::from(s.queue.seed_pair(&to, since_ms, &sent, now_ms, pair));
        }
        for left_by in departures.left_by {
            // No answer: it may have left right before the stop, so it counts as leaving now.
            let age = now_ms.saturating_sub(left_by.unwrap_or(now_ms));
            let Some(at) = now.checked_sub(Duration::from_millis(age)) else {
                continue;
            };
            if now.duration_since(at) < WINDOW {
                // The loop's window of starts too, so that it picks no more than can leave.
                s.window.record(at);
                s.departures.seed(at);
                global.seed(at);
            }
        }
        lanes
    }

    /// Adds the ids of the messages parked in this sender's schedule to `ids`.
    pub fn parked_ids(&self, ids: &mut std::collections::HashSet<u64>) {
        ids.extend(self.lock().queue.parked_ids());
    }

    pub fn snapshot(&self) -> SenderSnapshot {
        self.snapshot_with(|_| None)
    }

    /// [`snapshot`](Self::snapshot) with the count of the sender's messaging limit, which
    /// `count` reads for a configured sender from its configuration.
    pub fn snapshot_with(
        &self,
        count: impl FnOnce(&SenderConfig) -> Option<super::messaging_limit::MessagingLimitSnapshot>,
    ) -> SenderSnapshot {
        let cfg = self.config();
        let configured = self.is_configured();
        let messaging_limit = if configured { count(&cfg) } else { None };
        let mut s = self.lock();
        let sent_last_second = s.departures.count_last_second(Instant::now());
        SenderSnapshot {
            name: cfg.name,
            configured,
            phone_number_id: configured.then_some(cfg.phone_number_id),
            mps: if configured { cfg.mps } else { 0 },
            effective_mps: if configured { s.aimd.current() } else { 0.0 },
            sent_last_second,
            in_flight: s.queue.in_flight(),
            queued: s.queue.waiting(),
            paused: s.paused.is_some(),
            pause_reason: s.paused.clone(),
            unreachable: s.reach.unreachable(now_ms()),
            messaging_limit,
        }
    }
}

/// Runs until the app shuts down; in-flight attempts are tracked by `tasks`.
pub async fn run_loop(
    app: Arc<App>,
    shared: Arc<Shared>,
    sender: Arc<SenderState>,
    tasks: Arc<Mutex<tokio::task::JoinSet<()>>>,
) {
    let mut last_sweep = Instant::now();
    while !app.is_shutting_down() {
        let now = Instant::now();
        let now_wall = now_ms();
        sender
            .heartbeat_ms
            .store(now_wall, std::sync::atomic::Ordering::Relaxed);
        if !sender.is_configured() {
            // Woken when configured again.
            tokio::select! {
                _ = sender.wake.notified() => {}
                _ = tokio::time::sleep(MAX_SLEEP) => {}
            }
            continue;
        }
        let pair = shared.pair_limit();

        // Expire what outlived its ttl while waiting (a paused sender included).
        let expired = sender.lock().queue.take_expired(now_wall, pair);
        for id in expired {
            expire(&app, id, now_wall);
        }
        if now.duration_since(last_sweep) > Duration::from_secs(30) {
            sender.lock().queue.sweep_idle(now_wall);
            last_sweep = now;
        }

        // A request slot across senders first, so a picked message never waits for one.
        let permit = match shared.in_flight.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                tokio::select! {
                    p = shared.in_flight.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                    _ = tokio::time::sleep(MAX_SLEEP) => continue,
                }
            }
        };
        // Not picked while the cap across senders has no room (it is taken at departure).
        if let Some(wait) = shared.global.wait(Instant::now()) {
            drop(permit);
            tokio::time::sleep(wait.min(MAX_SLEEP)).await;
            continue;
        }

        // The clock again: waiting for a permit may have taken a while, and a start recorded
        // earlier than it happens lets the window admit too many.
        let now = Instant::now();
        let now_wall = now_ms();
        let step = {
            let mut s = sender.lock();
            let step = if s.paused.is_some() || s.starting >= MAX_STARTING {
                // Woken by a resume, or by an attempt reaching the wire.
                Step::Sleep(None)
            } else {
                let limit = s.aimd.limit(now);
                let slot = s.window.next_slot(now, limit).max(s.pacer.next_slot(now));
                match slot {
                    Some(at) => Step::Sleep(Some(at)),
                    None => match s.queue.next(now_wall, pair) {
                        Next::Send { id, to } => {
                            s.window.record(now);
                            s.pacer.record(now, limit);
                            s.starting += 1;
                            Step::Send { id, to }
                        }
                        Next::WaitUntil(at_ms) => Step::Sleep(Some(
                            now + Duration::from_millis(at_ms.saturating_sub(now_wall)),
                        )),
                        Next::Idle => Step::Sleep(None),
                    },
                }
            };
            s.asleep_until_ms = match step {
                Step::Send { .. } => 0,
                Step::Sleep(until) => {
                    now_wall + sleep_deadline(now, until).duration_since(now).as_millis() as u64
                }
            };
            step
        };

        match step {
            Step::Send { id, to } => {
                let app = app.clone();
                let shared = shared.clone();
                let sender = sender.clone();
                let mut set = tasks.lock().unwrap_or_else(|p| p.into_inner());
                // Reap finished attempts so the set stays small.
                while set.try_join_next().is_some() {}
                set.spawn(async move {
                    let _permit = permit;
                    attempt_one(app, shared, sender, id, to, now).await;
                });
            }
            Step::Sleep(until) => {
                drop(permit);
                let deadline = sleep_deadline(now, until);
                tokio::select! {
                    _ = sender.wake.notified() => {}
                    _ = tokio::time::sleep_until(deadline.into()) => {}
                }
            }
        }
    }
}

/// When a loop that decided at `now` to sleep until `until` (or until woken) wakes by itself.
fn sleep_deadline(now: Instant, until: Option<Instant>) -> Instant {
    until.unwrap_or(now + MAX_SLEEP).min(now + MAX_SLEEP)
}

async fn attempt_one(
    app: Arc<App>,
    shared: Arc<Shared>,
    sender: Arc<SenderState>,
    id: u64,
    to: Arc<str>,
    started: Instant,
) {
    let on_wire = OnWire {
        sender: sender.clone(),
    };
    if !sender.is_configured() {
        // Removed from the configuration after the loop picked it: back to the queue, unsent.
        drop(on_wire);
        {
            let mut s = sender.lock();
            s.window.forget(started);
            let limit = s.aimd.limit(Instant::now());
            s.pacer.forget(limit);
            s.queue
                .complete(&to, Outcome::Requeue, now_ms(), shared.pair_limit());
        }
        sender.wake.notify_one();
        return;
    }
    let config = app.config();
    let cloud = shared.cloud();
    let sender_cfg = sender.config();
    let pair_strikes = sender.lock().queue.pair_strikes(&to);
    // Whether the request left (was handed to the HTTP client), to count its answer.
    let left = std::sync::atomic::AtomicBool::new(false);
    let pace = || {
        let mut s = sender.lock();
        let now = Instant::now();
        let limit = s.aimd.limit(now);
        match s.departures.next_slot(now, limit) {
            Some(at) => Some(
                at.saturating_duration_since(now)
                    .max(Duration::from_millis(1)),
            ),
            // The cap across senders last: its slot is taken only by a request that leaves.
            None => match shared.global.leave(now) {
                Some(wait) => Some(wait),
                None => {
                    s.departures.leave(now);
                    left.store(true, std::sync::atomic::Ordering::Relaxed);
                    None
                }
            },
        }
    };
    let (outcome, effect) = attempt::run(AttemptInput {
        app: &app,
        config: &config,
        cloud: &cloud,
        sender: &sender.name,
        phone_number_id: &sender_cfg.phone_number_id,
        token: sender_cfg.token.expose(),
        id,
        to: &to,
        messaging_limit: sender_cfg.messaging_limit,
        portfolio: &sender_cfg.portfolio,
        limits: &shared.limits,
        pair_strikes,
        on_wire: Some(on_wire),
        pace: &pace,
        in_outage: &|| sender.lock().reach.outage_with_one_more(now_ms()),
    })
    .await;
    {
        let mut s = sender.lock();
        let now = Instant::now();
        if left.load(std::sync::atomic::Ordering::Relaxed) {
            s.departures.answered();
            match &effect {
                SenderEffect::Unreachable(error) => {
                    if s.reach.failed(now_ms(), error) {
                        tracing::warn!(
                            sender = %sender.name,
                            "the Graph API at {} does not answer, or answers that it is \
                             unavailable ({} requests in a row): {error}; messages are retried \
                             with backoff, and max_attempts ends none while this lasts; check \
                             api.base_url and the way to it, or Meta's status page",
                            crate::cloud::origin(&config.api.base_url),
                            s.reach.unreachable(now_ms()).map_or(0, |u| u.failures),
                        );
                    }
                }
                // A failure before any answer (the sender's id or token cannot be sent) says
                // nothing of the Graph API; a paused sender shows why anyway.
                SenderEffect::Pause {
                    answered: false, ..
                } => {}
                _ => {
                    if let Some(failures) = s.reach.answered(now_ms()) {
                        tracing::info!(
                            sender = %sender.name,
                            "the Graph API serves again, after {failures} requests it did not answer or serve"
                        );
                    }
                }
            }
        }
        match &effect {
            SenderEffect::None | SenderEffect::Unreachable(_) => {}
            SenderEffect::Throttle { .. } => s.aimd.throttled(now),
            SenderEffect::Pause { .. } if s.resumed_at.is_some_and(|r| r > started) => {
                tracing::info!(sender = %sender.name, id, "an attempt started before the sender was resumed failed for the account; staying resumed");
            }
            SenderEffect::Pause { reason, .. } => s.pause(&sender.name, reason),
        }
        // No request left: its rate slot goes back (a send held by the messaging limit, or
        // one the store could not prepare, comes back later).
        let never_left = !left.load(std::sync::atomic::Ordering::Relaxed);
        if matches!(outcome, Outcome::DoneWithoutRequest | Outcome::Held { .. })
            || (never_left && matches!(outcome, Outcome::RetryUnsent { .. }))
        {
            s.window.forget(started);
            let limit = s.aimd.limit(now);
            s.pacer.forget(limit);
        }
        s.queue
            .complete(&to, outcome, now_ms(), shared.pair_limit());
    }
    // Outside this sender's lock: the others' are taken one at a time.
    if let SenderEffect::Throttle { app_wide: true } = effect {
        app.dispatcher.throttle_others_of_app(&sender.name);
    }
    sender.wake.notify_one();
}

fn expire(app: &Arc<App>, id: u64, now: u64) {
    let written = app.store.update(id, |m| {
        if matches!(m.state, State::Queued | State::Retrying) {
            m.expire(now);
            Some(())
        } else {
            None
        }
    });
    match written {
        Ok(Some((_, m))) => app.publish_state(&m, "expired"),
        Ok(None) => {}
        Err(e) => tracing::error!(id, "cannot mark a message expired: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn departures_before_a_restart_fill_the_window_they_are_still_in() {
        let sender = SenderState::new(SenderConfig {
            name: "main".into(),
            phone_number_id: "1".into(),
            token: Secret::new("t"),
            mps: 10,
            messaging_limit: None,
            portfolio: "main".into(),
        });
        let pair = super::super::queue::TEST_PAIR;
        let (now_ms, now) = (10_000_000, Instant::now());
        let mut departures = SenderDepartures::default();
        // 8 answered in the last second, one too long ago, two interrupted (no answer).
        departures
            .left_by
            .extend((0..8).map(|i| Some(now_ms - 900 + i * 100)));
        departures.left_by.push(Some(now_ms - 1_500));
        departures.left_by.extend([None, None]);
        departures.pairs.insert("a".into(), vec![now_ms - 50]);
        assert_eq!(
            sender.seed(
                departures,
                now_ms,
                now,
                pair,
                &super::super::global::GlobalGate::default()
            ),
            1
        );

        let mut s = sender.lock();
        assert_eq!(s.departures.count_last_second(now), 10);
        // At 10 per second the window is full until the oldest seeded departure leaves it.
        let oldest = now - Duration::from_millis(900);
        assert_eq!(s.departures.next_slot(now, 10), Some(oldest + WINDOW));
        assert_eq!(s.window.next_slot(now, 10), Some(oldest + WINDOW));
        assert_eq!(s.departures.next_slot(now, 11), None);
        assert_eq!(s.queue.lanes(), 1, "the recipient's budget is remembered");
    }
}
