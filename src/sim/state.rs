//! The simulator's shared state. The set of numbers is fixed at start, so finding a number
//! takes no lock; each number has its own short-held lock for its rule state, never held
//! across an await.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::config::{FaultConfig, NumberConfig, SimConfig};
use super::faults::{Faults, Token};
use super::limits::{PairLimiter, SlidingWindow};
use super::rules::{OrderingTracker, ServiceWindows, Templates};
use super::stats::{Counters, NumberStats, SimStats, WebhookCounters};
use super::validate::normalize_phone;
use super::webhooks::Webhooks;

/// Everything the handlers share.
pub(crate) struct Sim {
    pub cfg: SimConfig,
    pub numbers: HashMap<String, Arc<Number>>,
    /// Where inbound messages go when the request names no number: the first configured.
    pub default_number: Arc<Number>,
    pub templates: Templates,
    pub not_on_whatsapp: HashSet<String>,
    /// Recipients whose window is always open.
    pub always_open: HashSet<String>,
    /// Dialled digits → wa_id digits, for users Meta knows under another id.
    wa_ids: HashMap<String, String>,
    /// The token that requests to unknown numbers are checked against (the top-level token).
    pub global_token: Mutex<Token>,
    pub webhooks: Webhooks,
    pub started: Instant,
    pub unrouted: AtomicU64,
    wamid_salt: u64,
    wamid_seq: AtomicU64,
    /// Becomes true when the simulator stops; held requests end early then.
    pub shutdown: watch::Receiver<bool>,
}

/// One business phone number.
pub(crate) struct Number {
    pub id: String,
    pub display: String,
    pub mps: u32,
    state: Mutex<NumberState>,
    pub webhooks: WebhookCounters,
}

/// A number's rule state and counters.
pub(crate) struct NumberState {
    /// Every arrival of the last second, for `requests_last_second` and `max_in_window`.
    pub arrivals: SlidingWindow,
    /// Arrivals with a valid token, for MPS: Graph refuses the others before WhatsApp counts.
    pub throughput: SlidingWindow,
    pub pairs: PairLimiter,
    pub windows: ServiceWindows,
    pub ordering: OrderingTracker,
    pub faults: Faults,
    pub token: Token,
    pub counters: Counters,
}

impl Number {
    fn new(cfg: &NumberConfig, sim_cfg: &SimConfig, now: Instant) -> Self {
        let faults = cfg.faults.clone().unwrap_or_else(|| sim_cfg.faults.clone());
        let token_value = cfg.token.clone().unwrap_or_else(|| sim_cfg.token.clone());
        let mut token = Token::new(token_value, now);
        token.set_expiry(
            faults.token_expire_after_requests,
            faults.token_expire_after_ms,
            now,
        );
        Number {
            id: cfg.phone_number_id.clone(),
            display: cfg.display(),
            mps: cfg.mps,
            state: Mutex::new(NumberState {
                arrivals: SlidingWindow::default(),
                throughput: SlidingWindow::default(),
                pairs: PairLimiter::new(
                    Duration::from_millis(sim_cfg.pair_rate.period_ms),
                    sim_cfg.pair_rate.burst,
                ),
                windows: ServiceWindows::default(),
                ordering: OrderingTracker::default(),
                faults: Faults::new(faults, now),
                token,
                counters: Counters::default(),
            }),
            webhooks: WebhookCounters::default(),
        }
    }

    /// The number's state. A panic while it was held cannot leave it inconsistent in a way
    /// that matters to a simulator, so poisoning is ignored.
    pub fn lock(&self) -> MutexGuard<'_, NumberState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces the faults in force (spans restart now); the token's expiry follows them.
    pub fn apply_faults(&self, faults: FaultConfig) {
        let now = Instant::now();
        let mut st = self.lock();
        st.token.set_expiry(
            faults.token_expire_after_requests,
            faults.token_expire_after_ms,
            now,
        );
        st.faults = Faults::new(faults, now);
    }

    fn stats(&self, now: Instant) -> NumberStats {
        let mut st = self.lock();
        let requests_last_second = st.arrivals.current(now);
        NumberStats {
            mps: self.mps,
            requests: st.counters.requests,
            accepted: st.counters.accepted,
            requests_last_second,
            max_in_window: st.arrivals.max(),
            violations: st.counters.violations.clone(),
            ordering_violations: st.counters.ordering_violations,
            errors_injected: st
                .counters
                .injected
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            inbound: st.counters.inbound,
            marked_read: st.counters.marked_read,
            webhooks: self.webhooks.snapshot(),
        }
    }

    /// Zeroes the counters; with `all`, Meta's side forgets rates and windows too.
    fn reset(&self, all: bool) {
        let mut st = self.lock();
        st.counters = Counters::default();
        st.ordering.clear();
        st.arrivals.reset_max();
        if all {
            st.arrivals.clear();
            st.throughput.clear();
            st.pairs.clear();
            st.windows.clear();
        }
        drop(st);
        self.webhooks.reset();
    }
}

impl Sim {
    pub fn new(
        cfg: SimConfig,
        webhooks: Webhooks,
        shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<Self> {
        let now = Instant::now();
        let mut numbers = HashMap::new();
        let mut first = None;
        for n in &cfg.numbers {
            let number = Arc::new(Number::new(n, &cfg, now));
            first.get_or_insert_with(|| number.clone());
            numbers.insert(n.phone_number_id.clone(), number);
        }
        let default_number =
            first.ok_or_else(|| anyhow::anyhow!("numbers: configure at least one number"))?;
        let digits = |list: &[String]| -> HashSet<String> {
            list.iter()
                .map(|r| normalize_phone(r).unwrap_or_else(|| r.clone()))
                .collect()
        };
        let wa_ids: HashMap<String, String> = cfg
            .wa_ids
            .iter()
            .filter_map(|(dialled, wa_id)| {
                Some((normalize_phone(dialled)?, normalize_phone(wa_id)?))
            })
            .collect();
        // A window belongs to the user: a dialled number listed as always open opens its wa_id's.
        let always_open = digits(&cfg.window.open)
            .into_iter()
            .map(|n| wa_ids.get(&n).cloned().unwrap_or(n))
            .collect();
        Ok(Sim {
            templates: Templates::new(&cfg.templates, cfg.accept_any_template),
            not_on_whatsapp: digits(&cfg.not_on_whatsapp),
            always_open,
            wa_ids,
            global_token: Mutex::new(Token::new(cfg.token.clone(), now)),
            numbers,
            default_number,
            webhooks,
            started: now,
            unrouted: AtomicU64::new(0),
            wamid_salt: fastrand::u64(..) & 0xFFFF_FFFF_FFFF,
            wamid_seq: AtomicU64::new(1),
            shutdown,
            cfg,
        })
    }

    /// The WhatsApp user id of a dialled number (digits) when `wa_ids` gives it another one;
    /// `None`: the number is its own wa_id. Meta keys users, their windows and their pair rate
    /// by wa_id.
    pub fn other_wa_id(&self, digits: &str) -> Option<&str> {
        self.wa_ids.get(digits).map(String::as_str)
    }

    /// A message id unique for this simulator run, shaped like Meta's.
    pub fn next_wamid(&self) -> String {
        let seq = self.wamid_seq.fetch_add(1, Ordering::Relaxed);
        format!("wamid.HBgL{:012X}{:016X}", self.wamid_salt, seq)
    }

    /// The numbers a request addresses: one by id, or all of them.
    pub fn select(&self, id: Option<&str>) -> Result<Vec<Arc<Number>>, String> {
        match id {
            Some(id) => self
                .numbers
                .get(id)
                .map(|n| vec![n.clone()])
                .ok_or_else(|| format!("unknown phone_number_id {id:?}")),
            None => Ok(self.numbers.values().cloned().collect()),
        }
    }

    pub fn global_token(&self) -> MutexGuard<'_, Token> {
        self.global_token
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub fn stats(&self) -> SimStats {
        let now = Instant::now();
        let mut stats = SimStats {
            uptime_ms: now.duration_since(self.started).as_millis() as u64,
            unrouted: self.unrouted.load(Ordering::Relaxed),
            webhooks_pending: self.webhooks.pending(),
            ..SimStats::default()
        };
        let sorted: BTreeMap<&String, &Arc<Number>> = self.numbers.iter().collect();
        for (id, number) in sorted {
            stats.add(id.clone(), number.stats(now));
        }
        stats
    }

    pub fn reset(&self, all: bool) {
        self.unrouted.store(0, Ordering::Relaxed);
        for number in self.numbers.values() {
            number.reset(all);
        }
    }
}
