//! One sender's scheduling loop: pick the next message its limits allow, start the attempt as a
//! task, sleep until something changes. The loop never waits on disk or network itself.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::app::App;
use crate::config::SenderConfig;
use crate::model::{now_ms, State};

use super::attempt::{self, AttemptInput, SenderEffect};
use super::queue::{Entry, Next, Outcome, PairLimit, SenderQueue};
use super::rate::{Aimd, SlidingWindow};
use super::{SenderSnapshot, Shared};

/// The longest the loop sleeps, so that it notices shutdown and keeps its heartbeat fresh.
const MAX_SLEEP: Duration = Duration::from_millis(250);

pub struct SenderState {
    pub name: String,
    pub config: RwLock<SenderConfig>,
    pub sched: Mutex<Schedule>,
    pub wake: Notify,
    /// Unix ms of the loop's last turn (the systemd watchdog checks it).
    pub heartbeat_ms: std::sync::atomic::AtomicU64,
}

pub struct Schedule {
    pub queue: SenderQueue,
    pub window: SlidingWindow,
    pub aimd: Aimd,
    pub paused: Option<String>,
    /// Unix ms by which the loop takes its next turn anyway (0 while it is busy): a message
    /// pushed for later than that needs no wake-up (a parked enqueue costs no turn).
    pub next_turn_ms: u64,
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
                aimd: Aimd::new(mps, Instant::now()),
                paused: None,
                next_turn_ms: 0,
            }),
            wake: Notify::new(),
            heartbeat_ms: std::sync::atomic::AtomicU64::new(now_ms()),
        }
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

    pub fn push(&self, entry: &Entry, pair: PairLimit) {
        let wake = {
            let mut s = self.lock();
            s.queue.push(entry, now_ms(), pair);
            // Due, expiring or blocking its lane before the loop's next turn: wake it now.
            entry.due_ms < s.next_turn_ms
                || entry.retry_at_ms.is_some()
                || entry.expires_at_ms.is_some_and(|e| e < s.next_turn_ms)
        };
        if wake {
            self.wake.notify_one();
        }
    }

    pub fn snapshot(&self) -> SenderSnapshot {
        let cfg = self.config();
        let mut s = self.lock();
        let sent_last_second = s.window.count_last_second(Instant::now());
        SenderSnapshot {
            name: cfg.name,
            phone_number_id: cfg.phone_number_id,
            mps: cfg.mps,
            effective_mps: s.aimd.current(),
            sent_last_second,
            in_flight: s.queue.in_flight(),
            queued: s.queue.waiting(),
            paused: s.paused.is_some(),
            pause_reason: s.paused.clone(),
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
        if let Some(global) = &shared.global {
            if let Err(not_until) = global.check() {
                drop(permit);
                let wait = not_until.wait_time_from(governor::clock::Clock::now(
                    &governor::clock::DefaultClock::default(),
                ));
                tokio::time::sleep(wait.min(MAX_SLEEP)).await;
                continue;
            }
        }

        let step = {
            let mut s = sender.lock();
            let step = if s.paused.is_some() {
                Step::Sleep(None)
            } else {
                let limit = s.aimd.limit(now);
                match s.window.next_slot(now, limit) {
                    Some(at) => Step::Sleep(Some(at)),
                    None => match s.queue.next(now_wall, pair) {
                        Next::Send { id, to } => {
                            s.window.record(now);
                            Step::Send { id, to }
                        }
                        Next::WaitUntil(at_ms) => Step::Sleep(Some(
                            now + Duration::from_millis(at_ms.saturating_sub(now_wall)),
                        )),
                        Next::Idle => Step::Sleep(None),
                    },
                }
            };
            s.next_turn_ms = match step {
                Step::Send { .. } => 0,
                Step::Sleep(until) => {
                    let deadline = until.unwrap_or(now + MAX_SLEEP).min(now + MAX_SLEEP);
                    now_wall + deadline.saturating_duration_since(now).as_millis() as u64
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
                let deadline = until.unwrap_or(now + MAX_SLEEP).min(now + MAX_SLEEP);
                tokio::select! {
                    _ = sender.wake.notified() => {}
                    _ = tokio::time::sleep_until(deadline.into()) => {}
                }
            }
        }
    }
}

async fn attempt_one(
    app: Arc<App>,
    shared: Arc<Shared>,
    sender: Arc<SenderState>,
    id: u64,
    to: Arc<str>,
    started: Instant,
) {
    let config = app.config();
    let Some(cloud) = shared.cloud() else {
        let retry = Outcome::Retry {
            at_ms: now_ms() + config.dispatch.retry_min.as_millis() as u64,
        };
        let mut s = sender.lock();
        s.window.forget(started);
        s.queue.complete(&to, retry, now_ms(), shared.pair_limit());
        return;
    };
    let sender_cfg = sender.config();
    let pair_strikes = sender.lock().queue.pair_strikes(&to);
    let restamp = || sender.lock().window.restamp(started, Instant::now());
    let (outcome, effect) = attempt::run(AttemptInput {
        app: &app,
        config: &config,
        cloud: &cloud,
        sender: &sender.name,
        phone_number_id: &sender_cfg.phone_number_id,
        token: sender_cfg.token.expose(),
        id,
        to: &to,
        pair_strikes,
        sending: &restamp,
    })
    .await;
    {
        let mut s = sender.lock();
        let now = Instant::now();
        match &effect {
            SenderEffect::None => {}
            SenderEffect::Throttle => s.aimd.throttled(now),
            SenderEffect::Pause(reason) => {
                if s.paused.is_none() {
                    tracing::error!(sender = %sender.name, "sender paused: {reason}; fix the cause, then reload (SIGHUP) or `waq sender resume {}`", sender.name);
                }
                s.paused = Some(reason.clone());
            }
        }
        if outcome == Outcome::DoneWithoutRequest {
            s.window.forget(started);
        }
        s.queue
            .complete(&to, outcome, now_ms(), shared.pair_limit());
    }
    sender.wake.notify_one();
}

fn expire(app: &Arc<App>, id: u64, now: u64) {
    let written = app.store.update(id, |m| {
        if matches!(m.state, State::Queued | State::Retrying) {
            m.transition(State::Expired, now, "ttl passed before it could be sent");
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
