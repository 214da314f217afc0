//! One sender's in-memory schedule: a lane per recipient (messages in priority-then-enqueue
//! order, one in flight at a time, its own pair budget and backoff), lanes that may send now,
//! lanes waiting for a time, and messages scheduled for later. Pure data: no I/O, no clock.
//!
//! A lane's pair budget is rebuilt at start from the departures found in the store
//! ([`SenderQueue::seed_pair`]); its count of consecutive 131056 answers (the X in Meta's 4^X s
//! backoff) is not: after a restart it starts again from 0. The backoff of the 131056 itself
//! survives, as the message's `next_attempt_at`, unless the message ended on it (its ttl or
//! `dispatch.max_age_s` would have passed first): that pause lives in the lane alone, and a
//! restart during it lets the recipient's next message go.
//!
//! Picking the next message is O(log n) in the number of lanes and messages.

use std::collections::{BTreeSet, BinaryHeap, HashMap, HashSet};
use std::sync::Arc;

use crate::model::Priority;

use super::pair::PairBudget;

pub type Recipient = Arc<str>;

/// Pair-limit settings (Meta: one per 6 s, bursts of 45).
#[derive(Debug, Clone, Copy)]
pub struct PairLimit {
    pub interval_ms: u64,
    pub burst: u32,
}

impl PairLimit {
    /// How far ahead of the clock a recipient's budget can run: a full burst's worth.
    pub fn memory_ms(&self) -> u64 {
        self.interval_ms.saturating_mul(self.burst as u64)
    }
}

/// The pair limit of the dispatch modules' tests: Meta's default, one message per 6 s to a
/// recipient in bursts of up to 45.
#[cfg(test)]
pub(super) const TEST_PAIR: PairLimit = PairLimit {
    interval_ms: 6_000,
    burst: 45,
};

#[derive(Default)]
struct Lane {
    /// Waiting messages, best first: (priority, id).
    queue: BTreeSet<(Priority, u64)>,
    in_flight: Option<(Priority, u64)>,
    /// The ttl of the message in flight, filed again if it comes back to the queue.
    in_flight_expiry: Option<u64>,
    pair: PairBudget,
    /// No send before this (a retry's backoff, or Meta's 4^X s after a 131056).
    blocked_until_ms: u64,
    /// The message whose retry backoff set `blocked_until_ms`: if it leaves unsent
    /// (cancelled, expired), its backoff must not hold back the messages behind it.
    blocked_for_retry_of: Option<u64>,
    /// The block is that message's hold by Meta's messaging limit, which a message from the
    /// recipient lifts: with the window open it no longer counts against the limit.
    blocked_by_hold: bool,
    pair_strikes: u32,
    slot: Slot,
}

impl Lane {
    /// Blocks the lane until `at_ms` for the retry of message `id` (never shortening a block).
    fn block_for_retry(&mut self, id: u64, at_ms: u64) {
        if at_ms >= self.blocked_until_ms {
            self.blocked_until_ms = at_ms;
            self.blocked_for_retry_of = Some(id);
            self.blocked_by_hold = false;
        }
    }

    /// Blocks the lane until `at_ms` for message `id`, held by the messaging limit.
    fn block_for_hold(&mut self, id: u64, at_ms: u64) {
        self.block_for_retry(id, at_ms);
        self.blocked_by_hold = self.blocked_for_retry_of == Some(id);
    }

    fn unblock(&mut self) {
        self.blocked_until_ms = 0;
        self.blocked_for_retry_of = None;
        self.blocked_by_hold = false;
    }

    /// Meta answered 131056: the recipient's lane waits until `at_ms` (never shortening a
    /// block), whatever becomes of the message, and the next one counts one strike more.
    fn pair_limited(&mut self, at_ms: u64) {
        if at_ms >= self.blocked_until_ms {
            self.blocked_for_retry_of = None;
        }
        // Not lifted by the recipient's message any more: the pair's backoff is Meta's.
        self.blocked_by_hold = false;
        self.blocked_until_ms = self.blocked_until_ms.max(at_ms);
        self.pair_strikes += 1;
    }

    /// Takes a waiting message out unsent, and the backoff of its retry with it. A 131056's
    /// block stays: it is the recipient's, not the message's.
    fn take_out(&mut self, priority: Priority, id: u64) -> bool {
        let removed = self.queue.remove(&(priority, id));
        if removed && self.blocked_for_retry_of == Some(id) {
            self.unblock();
        }
        removed
    }
}

/// Where a lane is filed now, so it can be taken out again.
#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Slot {
    #[default]
    None,
    Runnable(Priority, u64),
    Timer(u64),
}

/// What the scheduler says to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Send message `id` to `to` now; its lane is marked in flight.
    Send { id: u64, to: Recipient },
    /// Nothing may go before this time (Unix ms).
    WaitUntil(u64),
    /// Nothing is waiting.
    Idle,
}

/// How an attempt ended, as far as the schedule cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The message left the queue (sent, failed, expired, cancelled).
    Done,
    /// Try again not before `at_ms`; the lane waits (order is kept).
    Retry { at_ms: u64 },
    /// As `Retry`, for an attempt whose request never reached Meta (no connection could be
    /// made, or a local failure before it): the pair allowance is given back.
    RetryUnsent { at_ms: u64 },
    /// As `RetryUnsent`, for a message held by Meta's messaging limit: a message from the
    /// recipient ([`SenderQueue::release_hold`]) lets it go before `at_ms`.
    Held { at_ms: u64 },
    /// Meta's pair limit (131056): the lane backs off 4^X s.
    PairLimited { at_ms: u64 },
    /// Meta's pair limit (131056) for a message that ended on it (its ttl or
    /// `dispatch.max_age_s` would pass before the next attempt): it leaves the queue, and the
    /// lane still backs off until `at_ms`, its strikes counting on, as Meta asked of the pair.
    PairLimitedEnded { at_ms: u64 },
    /// Back to the queue unchanged (sender paused).
    Requeue,
    /// No request was made (e.g. the message was cancelled): give the pair budget back.
    DoneWithoutRequest,
}

/// A message as the schedule knows it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: u64,
    pub to: String,
    pub priority: Priority,
    /// Not before this (send_at or a backoff), Unix ms.
    pub due_ms: u64,
    pub expires_at_ms: Option<u64>,
    /// Set for a message recovered mid-backoff: its lane waits until then.
    pub retry_at_ms: Option<u64>,
    /// That wait is a hold by the messaging limit.
    pub held: bool,
}

/// A message set aside until its `send_at`. A million of these is an ordinary backlog, so one
/// is 40 bytes with no allocation of its own (a recipient in the validated form, digits without
/// a leading zero, is kept as a number) where a set entry, a map entry and a shared string per
/// message took about 160.
struct Parked {
    due_ms: u64,
    id: u64,
    to: ParkedTo,
}

enum ParkedTo {
    Number(u64, Priority),
    Text(Recipient, Priority),
}

impl ParkedTo {
    fn new(to: &str, priority: Priority) -> ParkedTo {
        let plain = (1..=19).contains(&to.len())
            && !to.starts_with('0')
            && to.bytes().all(|b| b.is_ascii_digit());
        match to.parse::<u64>() {
            Ok(n) if plain => ParkedTo::Number(n, priority),
            _ => ParkedTo::Text(Arc::from(to), priority),
        }
    }
}

impl PartialEq for Parked {
    fn eq(&self, other: &Self) -> bool {
        (self.due_ms, self.id) == (other.due_ms, other.id)
    }
}

impl Eq for Parked {}

impl PartialOrd for Parked {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Parked {
    /// Reversed, so that the heap's top is the earliest (due, id).
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.due_ms, other.id).cmp(&(self.due_ms, self.id))
    }
}

/// A message with a ttl, as the expiry sweep needs it.
struct Expiry {
    to: Recipient,
    priority: Priority,
    expires_ms: u64,
    /// Still set aside in `scheduled` (not yet in its lane).
    parked: bool,
}

#[derive(Default)]
pub struct SenderQueue {
    lanes: HashMap<Recipient, Lane>,
    runnable: BTreeSet<(Priority, u64, Recipient)>,
    timers: BTreeSet<(u64, Recipient)>,
    /// Messages not yet due (send_at), earliest on top.
    scheduled: BinaryHeap<Parked>,
    /// Ids in `scheduled` that left meanwhile (expired, cancelled): skipped when they come
    /// to the top.
    dropped_parked: HashSet<u64>,
    /// Ids that `remove` took for parked but that may not have been pushed yet (cancelled
    /// while their enqueue was on its way): `push` drops them when they arrive.
    withdrawn_unseen: HashSet<u64>,
    /// Messages with a ttl: (expires, id).
    expiries: BTreeSet<(u64, u64)>,
    expiry_info: HashMap<u64, Expiry>,
    /// Signed: a message cancelled before it reached the queue is counted out first and in
    /// (to no effect) when it arrives.
    waiting: i64,
    in_flight: usize,
}

impl SenderQueue {
    pub fn new() -> Self {
        Self::default()
    }

    /// Messages waiting (not in flight).
    pub fn waiting(&self) -> usize {
        usize::try_from(self.waiting).unwrap_or(0)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    pub fn lanes(&self) -> usize {
        self.lanes.len()
    }

    /// Adds a message. `due_ms` in the future keeps it aside until then; `retry_at_ms` (a
    /// recovered retry) blocks its lane until then so that later messages don't overtake it.
    pub fn push(&mut self, e: &Entry, now_ms: u64, pair: PairLimit) {
        let Entry {
            id,
            priority,
            due_ms,
            expires_at_ms,
            retry_at_ms,
            ..
        } = *e;
        self.waiting += 1;
        // Cancelled while its enqueue was still on the way here (`remove` found it nowhere
        // and counted it out): it stops here.
        if !self.withdrawn_unseen.is_empty() && self.withdrawn_unseen.remove(&id) {
            self.dropped_parked.remove(&id);
            return;
        }
        let parked = due_ms > now_ms && retry_at_ms.is_none();
        if let Some(exp) = expires_at_ms {
            self.expiries.insert((exp, id));
            let expiry = Expiry {
                to: self.intern(&e.to),
                priority,
                expires_ms: exp,
                parked,
            };
            self.expiry_info.insert(id, expiry);
        }
        if parked {
            self.scheduled.push(Parked {
                due_ms,
                id,
                to: ParkedTo::new(&e.to, priority),
            });
            return;
        }
        let to = self.intern(&e.to);
        let lane = self.lanes.entry(to.clone()).or_default();
        lane.queue.insert((priority, id));
        match retry_at_ms {
            Some(at) if e.held => lane.block_for_hold(id, at),
            Some(at) => lane.block_for_retry(id, at),
            None => {}
        }
        self.reschedule(&to, now_ms, pair);
    }

    fn intern(&self, to: &str) -> Recipient {
        match self.lanes.get_key_value(to) {
            Some((k, _)) => k.clone(),
            None => Arc::from(to),
        }
    }

    /// The next message to send at `now_ms`, if any.
    pub fn next(&mut self, now_ms: u64, pair: PairLimit) -> Next {
        self.promote_scheduled(now_ms, pair);
        self.drop_left_parked();
        self.promote_timers(now_ms);
        while let Some((prio, id, to)) = self.runnable.pop_first() {
            let Some(lane) = self.lanes.get_mut(&to) else {
                continue;
            };
            lane.slot = Slot::None;
            let allowed = lane.pair.allowed_at(pair.interval_ms, pair.burst);
            if allowed > now_ms {
                lane.slot = Slot::Timer(allowed);
                self.timers.insert((allowed, to));
                continue;
            }
            if lane.queue.first() != Some(&(prio, id)) || lane.in_flight.is_some() {
                // Stale entry: the lane changed since it was filed.
                self.reschedule(&to, now_ms, pair);
                continue;
            }
            lane.queue.pop_first();
            lane.in_flight = Some((prio, id));
            lane.pair.consume(now_ms, pair.interval_ms);
            lane.in_flight_expiry = self.expiry_info.remove(&id).map(|e| e.expires_ms);
            if let Some(exp) = lane.in_flight_expiry {
                self.expiries.remove(&(exp, id));
            }
            self.waiting -= 1;
            self.in_flight += 1;
            return Next::Send { id, to };
        }
        let timer = self.timers.first().map(|(at, _)| *at);
        let sched = self.scheduled.peek().map(|p| p.due_ms);
        let expiry = self.expiries.first().map(|(at, _)| *at);
        match [timer, sched, expiry].into_iter().flatten().min() {
            Some(at) => Next::WaitUntil(at),
            None => Next::Idle,
        }
    }

    /// Records how the in-flight message of `to` ended and files its lane again.
    pub fn complete(&mut self, to: &str, outcome: Outcome, now_ms: u64, pair: PairLimit) {
        let Some(to) = self.lanes.get_key_value(to).map(|(k, _)| k.clone()) else {
            return;
        };
        let Some(lane) = self.lanes.get_mut(&to) else {
            return;
        };
        let Some((prio, id)) = lane.in_flight.take() else {
            return;
        };
        let expiry = lane.in_flight_expiry.take();
        self.in_flight -= 1;
        let back_in_queue = matches!(
            outcome,
            Outcome::Retry { .. }
                | Outcome::RetryUnsent { .. }
                | Outcome::Held { .. }
                | Outcome::PairLimited { .. }
                | Outcome::Requeue
        );
        if !matches!(
            outcome,
            Outcome::DoneWithoutRequest
                | Outcome::Requeue
                | Outcome::RetryUnsent { .. }
                | Outcome::Held { .. }
        ) {
            lane.pair.answered(now_ms, pair.interval_ms);
        }
        match outcome {
            Outcome::Done => {
                lane.pair_strikes = 0;
            }
            Outcome::DoneWithoutRequest => {
                lane.pair.refund(pair.interval_ms);
            }
            Outcome::Retry { at_ms } => {
                lane.queue.insert((prio, id));
                lane.block_for_retry(id, at_ms);
                self.waiting += 1;
            }
            Outcome::RetryUnsent { at_ms } => {
                lane.queue.insert((prio, id));
                lane.block_for_retry(id, at_ms);
                lane.pair.refund(pair.interval_ms);
                self.waiting += 1;
            }
            Outcome::Held { at_ms } => {
                lane.queue.insert((prio, id));
                lane.block_for_hold(id, at_ms);
                lane.pair.refund(pair.interval_ms);
                self.waiting += 1;
            }
            Outcome::PairLimited { at_ms } => {
                lane.queue.insert((prio, id));
                lane.pair_limited(at_ms);
                self.waiting += 1;
            }
            Outcome::PairLimitedEnded { at_ms } => lane.pair_limited(at_ms),
            Outcome::Requeue => {
                lane.queue.insert((prio, id));
                lane.pair.refund(pair.interval_ms);
                self.waiting += 1;
            }
        }
        // Back in the queue, its ttl is watched again (a paused sender's messages expire).
        if let (true, Some(exp)) = (back_in_queue, expiry) {
            self.expiries.insert((exp, id));
            self.expiry_info.insert(
                id,
                Expiry {
                    to: to.clone(),
                    priority: prio,
                    expires_ms: exp,
                    parked: false,
                },
            );
        }
        self.reschedule(&to, now_ms, pair);
    }

    /// The recipient `to` wrote in: a lane held by the messaging limit may send now (its
    /// window is open, so the held message no longer counts). Whether a hold was lifted.
    pub fn release_hold(&mut self, to: &str, now_ms: u64, pair: PairLimit) -> bool {
        let Some((to, lane)) = self.lanes.get_key_value(to) else {
            return false;
        };
        if !lane.blocked_by_hold || lane.blocked_until_ms <= now_ms {
            return false;
        }
        let to = to.clone();
        if let Some(lane) = self.lanes.get_mut(&to) {
            lane.unblock();
        }
        self.reschedule(&to, now_ms, pair);
        true
    }

    /// The ids of the messages parked for a later time (a resync checks against them, since
    /// [`contains`](Self::contains) does not see a parked message without a ttl).
    pub fn parked_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.scheduled
            .iter()
            .map(|p| p.id)
            .filter(|id| !self.dropped_parked.contains(id))
    }

    /// Whether message `id` is already in its lane (waiting or in flight). Messages parked for
    /// a later `send_at` are not indexed by id (40 bytes each, no map): one pushed twice is
    /// filed once when it becomes due, since a lane is a set.
    pub fn contains(&self, id: u64, to: &str, priority: Priority) -> bool {
        self.expiry_info.get(&id).is_some_and(|e| e.parked)
            || self.lanes.get(to).is_some_and(|l| {
                l.queue.contains(&(priority, id)) || l.in_flight == Some((priority, id))
            })
    }

    /// Carries the pair budget of `to` over from before a restart: `sent_ms` are the times
    /// (Unix ms, in time order) its recent requests were answered, none before `since_ms`. A lane is kept for it, even
    /// with nothing waiting, until its budget is full again (see `sweep_idle`), so that a
    /// message enqueued later still waits its turn. Whether the budget was still in use.
    pub fn seed_pair(
        &mut self,
        to: &str,
        since_ms: u64,
        sent_ms: &[u64],
        now_ms: u64,
        pair: PairLimit,
    ) -> bool {
        // The most the budget can have been at `since_ms`: a budget runs at most
        // `interval × burst` ahead of the clock.
        let start = since_ms.saturating_add(pair.memory_ms());
        let budget = PairBudget::from_sent(start, sent_ms, pair.interval_ms);
        if budget.is_full(now_ms) {
            return false;
        }
        let to = self.intern(to);
        self.lanes.entry(to.clone()).or_default().pair.merge(budget);
        self.reschedule(&to, now_ms, pair);
        true
    }

    /// Consecutive 131056 answers for this lane (X in Meta's 4^X s).
    pub fn pair_strikes(&self, to: &str) -> u32 {
        self.lanes.get(to).map(|l| l.pair_strikes).unwrap_or(0)
    }

    /// Takes out waiting messages whose ttl passed; the caller marks them expired.
    pub fn take_expired(&mut self, now_ms: u64, pair: PairLimit) -> Vec<u64> {
        let mut out = Vec::new();
        while let Some(&(exp, id)) = self.expiries.first() {
            if exp > now_ms {
                break;
            }
            self.expiries.pop_first();
            let Some(Expiry {
                to,
                priority: prio,
                parked,
                ..
            }) = self.expiry_info.remove(&id)
            else {
                continue;
            };
            if parked {
                // Left in the heap, skipped when it comes to the top.
                self.dropped_parked.insert(id);
                self.waiting -= 1;
                out.push(id);
                continue;
            }
            if let Some(lane) = self.lanes.get_mut(&to) {
                if lane.take_out(prio, id) {
                    self.waiting -= 1;
                    out.push(id);
                    self.reschedule(&to, now_ms, pair);
                }
            }
        }
        out
    }

    /// Takes out message `id` if it is waiting (it was cancelled): it leaves without being
    /// sent, so it must stop counting as waiting now, not when its turn would have come. A
    /// message in flight is left to its attempt, which finds it cancelled; so is one whose
    /// attempt already found it cancelled and ended (the cancel's commit gives the loop time
    /// to pick it). `parked_until` is when a `queued` message was due to be sent (`None` for
    /// a retrying one, which waits in its lane, never parked). Whether it was taken out.
    pub fn remove(
        &mut self,
        id: u64,
        to: &str,
        priority: Priority,
        parked_until: Option<u64>,
        now_ms: u64,
        pair: PairLimit,
    ) -> bool {
        // What is due is in its lane from here on, so only a message due later can be parked.
        self.promote_scheduled(now_ms, pair);
        let expiry = self.expiry_info.remove(&id);
        if let Some(e) = &expiry {
            self.expiries.remove(&(e.expires_ms, id));
        }
        let mut in_flight = false;
        if let Some((key, lane)) = self.lanes.get_key_value(to) {
            let key = key.clone();
            in_flight = lane.in_flight == Some((priority, id));
            if lane.queue.contains(&(priority, id)) {
                if let Some(lane) = self.lanes.get_mut(&key) {
                    lane.take_out(priority, id);
                }
                self.waiting -= 1;
                self.reschedule(&key, now_ms, pair);
                return true;
            }
        }
        // Neither in its lane nor in flight: set aside for a later `send_at`, not here yet
        // (its enqueue has not handed it over; `push` then drops it), or already gone (picked
        // and ended). Parked messages are not indexed by id (see `Parked`); a search of the
        // heap per cancel would make cancelling a scheduled campaign quadratic.
        let (parked, seen) = match &expiry {
            Some(e) => (e.parked, true),
            None => (
                !in_flight && parked_until.is_some_and(|due| due > now_ms),
                false,
            ),
        };
        if parked && self.dropped_parked.insert(id) {
            if !seen {
                self.withdrawn_unseen.insert(id);
            }
            self.waiting -= 1;
            return true;
        }
        false
    }

    fn promote_scheduled(&mut self, now_ms: u64, pair: PairLimit) {
        while self.scheduled.peek().is_some_and(|p| p.due_ms <= now_ms) {
            let Some(Parked { id, to, .. }) = self.scheduled.pop() else {
                break;
            };
            if self.dropped_parked.remove(&id) {
                self.withdrawn_unseen.remove(&id);
                continue;
            }
            if let Some(e) = self.expiry_info.get_mut(&id) {
                e.parked = false;
            }
            let (to, prio) = match to {
                ParkedTo::Number(n, prio) => (self.intern(&n.to_string()), prio),
                ParkedTo::Text(text, prio) => (self.intern(&text), prio),
            };
            let lane = self.lanes.entry(to.clone()).or_default();
            if lane.in_flight == Some((prio, id)) || !lane.queue.insert((prio, id)) {
                // Parked twice (a resync after the store reopened submits every pending
                // message again): it waits once, so it counts once.
                self.waiting -= 1;
                continue;
            }
            self.reschedule(&to, now_ms, pair);
        }
    }

    /// Pops messages that left (expired, cancelled) off the top of `scheduled`, so its top is
    /// a real due time.
    fn drop_left_parked(&mut self) {
        while let Some(top) = self.scheduled.peek() {
            if !self.dropped_parked.remove(&top.id) {
                break;
            }
            self.withdrawn_unseen.remove(&top.id);
            self.scheduled.pop();
        }
    }

    fn promote_timers(&mut self, now_ms: u64) {
        while let Some((at, _)) = self.timers.first() {
            if *at > now_ms {
                break;
            }
            let Some((_, to)) = self.timers.pop_first() else {
                break;
            };
            if let Some(lane) = self.lanes.get_mut(&to) {
                lane.slot = Slot::None;
                if lane.in_flight.is_none() {
                    if let Some(&(prio, id)) = lane.queue.first() {
                        lane.slot = Slot::Runnable(prio, id);
                        self.runnable.insert((prio, id, to));
                    }
                }
            }
        }
    }

    /// Files the lane of `to` where it belongs now: runnable, waiting for a time, or nowhere
    /// (empty or in flight). Forgets lanes that are empty with their full pair budget back.
    fn reschedule(&mut self, to: &Recipient, now_ms: u64, pair: PairLimit) {
        let Some(lane) = self.lanes.get_mut(to) else {
            return;
        };
        match lane.slot {
            Slot::None => {}
            Slot::Runnable(p, i) => {
                self.runnable.remove(&(p, i, to.clone()));
            }
            Slot::Timer(at) => {
                self.timers.remove(&(at, to.clone()));
            }
        }
        lane.slot = Slot::None;
        if lane.in_flight.is_some() {
            return;
        }
        let Some(&(prio, id)) = lane.queue.first() else {
            if lane.pair.is_full(now_ms) && lane.blocked_until_ms <= now_ms {
                self.lanes.remove(to);
            }
            return;
        };
        let at = lane
            .blocked_until_ms
            .max(lane.pair.allowed_at(pair.interval_ms, pair.burst));
        if at > now_ms {
            lane.slot = Slot::Timer(at);
            self.timers.insert((at, to.clone()));
        } else {
            lane.slot = Slot::Runnable(prio, id);
            self.runnable.insert((prio, id, to.clone()));
        }
    }

    /// Drops lanes that are idle with a full pair budget (called now and then).
    pub fn sweep_idle(&mut self, now_ms: u64) {
        self.lanes.retain(|_, l| {
            !(l.queue.is_empty()
                && l.in_flight.is_none()
                && l.pair.is_full(now_ms)
                && l.blocked_until_ms <= now_ms)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAIR: PairLimit = TEST_PAIR;

    fn send(q: &mut SenderQueue, now: u64) -> (u64, Recipient) {
        send_with(q, now, PAIR)
    }

    fn send_with(q: &mut SenderQueue, now: u64, pair: PairLimit) -> (u64, Recipient) {
        match q.next(now, pair) {
            Next::Send { id, to } => (id, to),
            other => panic!("expected a send, got {other:?}"),
        }
    }

    #[test]
    fn one_in_flight_per_recipient_in_order() {
        let mut q = SenderQueue::new();
        let now = 1_000_000;
        for id in 1..=3 {
            q.push(
                &Entry {
                    id,
                    to: "a".into(),
                    priority: Priority::Normal,
                    due_ms: now,
                    expires_at_ms: None,
                    retry_at_ms: None,
                    held: false,
                },
                now,
                PAIR,
            );
        }
        q.push(
            &Entry {
                id: 4,
                to: "b".into(),
                priority: Priority::Normal,
                due_ms: now,
                expires_at_ms: None,
                retry_at_ms: None,
                held: false,
            },
            now,
            PAIR,
        );
        let (id1, to1) = send(&mut q, now);
        assert_eq!((id1, &*to1), (1, "a"));
        let (id2, to2) = send(&mut q, now);
        assert_eq!((id2, &*to2), (4, "b"), "lane a is busy, b goes");
        assert_eq!(q.next(now, PAIR), Next::Idle);
        q.complete("a", Outcome::Done, now, PAIR);
        assert_eq!(send(&mut q, now).0, 2);
    }

    #[test]
    fn priority_first_then_enqueue_order() {
        let mut q = SenderQueue::new();
        let now = 1_000_000;
        q.push(
            &Entry {
                id: 1,
                to: "a".into(),
                priority: Priority::Low,
                due_ms: now,
                expires_at_ms: None,
                retry_at_ms: None,
                held: false,
            },
            now,
            PAIR,
        );
        q.push(
            &Entry {
                id: 2,
                to: "b".into(),
                priority: Priority::Normal,
                due_ms: now,
                expires_at_ms: None,
                retry_at_ms: None,
                held: false,
            },
            now,
            PAIR,
        );
        q.push(
            &Entry {
                id: 3,
                to: "c".into(),
                priority: Priority::High,
                due_ms: now,
                expires_at_ms: None,
                retry_at_ms: None,
                held: false,
            },
            now,
            PAIR,
        );
        q.push(
            &Entry {
                id: 4,
                to: "a".into(),
                priority: Priority::High,
                due_ms: now,
                expires_at_ms: None,
                retry_at_ms: None,
                held: false,
            },
            now,
            PAIR,
        );
        let order: Vec<u64> = (0..3).map(|_| send(&mut q, now).0).collect();
        assert_eq!(order, vec![3, 4, 2]);
    }

    /// A hold by the messaging limit blocks the recipient's lane like a retry, but a message
    /// from the recipient lifts it; a retry's backoff and a 131056's are not lifted.
    #[test]
    fn a_hold_is_lifted_when_the_recipient_writes_in() {
        let mut q = SenderQueue::new();
        let now = 1_000_000;
        let day = now + 86_400_000;
        for (id, to) in [(1, "a"), (2, "a"), (3, "b"), (4, "c")] {
            q.push(&due_now(id, to, now), now, PAIR);
        }
        assert_eq!(send(&mut q, now).0, 1);
        q.complete("a", Outcome::Held { at_ms: day }, now, PAIR);
        assert_eq!(send(&mut q, now).0, 3);
        q.complete("b", Outcome::Retry { at_ms: day }, now, PAIR);
        assert_eq!(send(&mut q, now).0, 4);
        q.complete("c", Outcome::PairLimited { at_ms: day }, now, PAIR);
        assert_eq!(q.next(now, PAIR), Next::WaitUntil(day));

        assert!(!q.release_hold("b", now, PAIR), "a retry's backoff stays");
        assert!(!q.release_hold("c", now, PAIR), "a 131056's backoff stays");
        assert!(!q.release_hold("d", now, PAIR), "no lane");
        assert!(q.release_hold("a", now, PAIR));
        assert_eq!(send(&mut q, now).0, 1, "the held message goes first");
        q.complete("a", Outcome::Done, now, PAIR);
        assert_eq!(send(&mut q, now).0, 2, "then the one behind it");
        assert!(!q.release_hold("a", now, PAIR), "nothing held any more");

        // Recovered mid-hold after a restart: the entry says so.
        let mut q = SenderQueue::new();
        let held = Entry {
            retry_at_ms: Some(day),
            held: true,
            ..due_now(5, "e", now)
        };
        let retrying = Entry {
            retry_at_ms: Some(day),
            ..due_now(6, "f", now)
        };
        q.push(&held, now, PAIR);
        q.push(&retrying, now, PAIR);
        assert_eq!(q.next(now, PAIR), Next::WaitUntil(day));
        assert!(!q.release_hold("f", now, PAIR));
        assert!(q.release_hold("e", now, PAIR));
        assert_eq!(send(&mut q, now).0, 5);
    }

    #[test]
    fn retry_blocks_its_lane_only() {
        let mut q = SenderQueue::new();
        let now = 1_000_000;
        q.push(
            &Entry {
                id: 1,
                to: "a".into(),
                priority: Priority::Normal,
                due_ms: now,
                expires_at_ms: None,
                retry_at_ms: None,
                held: false,
            },
            now,
            PAIR,
        );
        q.push(
            &Entry {
                id: 2,
                to: "a".into(),
                priority: Priority::Normal,
                due_ms: now,
                expires_at_ms: None,
                retry_at_ms: None,
                held: false,
            },
            now,
            PAIR,
        );
        q.push(
            &Entry {
                id: 3,
                to: "b".into(),
                priority: Priority::Normal,
                due_ms: now,
                expires_at_ms: None,
                retry_at_ms: None,
                held: false,
            },
            now,
            PAIR,
        );
        assert_eq!(send(&mut q, now).0, 1);
        q.complete("a", Outcome::Retry { at_ms: now + 5_000 }, now, PAIR);
        assert_eq!(send(&mut q, now).0, 3);
        assert_eq!(q.next(now, PAIR), Next::WaitUntil(now + 5_000));
        assert_eq!(
            send(&mut q, now + 5_000).0,
            1,
            "the retried message keeps its place"
        );
    }

    #[test]
    fn pair_burst_then_paced() {
        let mut q = SenderQueue::new();
        let now = 1_000_000;
        for id in 1..=50 {
            q.push(
                &Entry {
                    id,
                    to: "a".into(),
                    priority: Priority::Normal,
                    due_ms: now,
                    expires_at_ms: None,
                    retry_at_ms: None,
                    held: false,
                },
                now,
                PAIR,
            );
        }
        for _ in 0..44 {
            send(&mut q, now);
            q.complete("a", Outcome::Done, now, PAIR);
        }
        let margin = super::super::pair::margin_ms(6_000);
        assert_eq!(q.next(now, PAIR), Next::WaitUntil(now + margin));
        send(&mut q, now + margin);
        q.complete("a", Outcome::Done, now + margin, PAIR);
        assert_eq!(
            q.next(now + margin, PAIR),
            Next::WaitUntil(now + 6_000 + margin)
        );
    }

    #[test]
    fn a_request_that_never_left_gives_its_pair_allowance_back() {
        let pair = PairLimit {
            interval_ms: 6_000,
            burst: 1,
        };
        let now = 1_000_000;
        let mut q = SenderQueue::new();
        q.push(&due_now(1, "a", now), now, pair);
        assert_eq!(send_with(&mut q, now, pair).0, 1);
        // No connection: retried after its backoff, with the one allowance still there.
        q.complete(
            "a",
            Outcome::RetryUnsent { at_ms: now + 100 },
            now + 50,
            pair,
        );
        assert_eq!(q.next(now + 50, pair), Next::WaitUntil(now + 100));
        assert_eq!(send_with(&mut q, now + 100, pair).0, 1);
        // Sent, then a 5xx: Meta may have counted it, so the next waits an interval.
        q.complete("a", Outcome::Retry { at_ms: now + 200 }, now + 150, pair);
        let margin = super::super::pair::margin_ms(6_000);
        assert_eq!(
            q.next(now + 200, pair),
            Next::WaitUntil(now + 150 + 6_000 + margin)
        );
    }

    #[test]
    fn the_pair_budget_counts_a_request_at_its_answer() {
        let mut q = SenderQueue::new();
        let now = 1_000_000;
        for id in 1..=50 {
            q.push(&due_now(id, "a", now), now, PAIR);
        }
        // The first request left at `now` and was answered 400 ms later; the rest of the
        // burst at once.
        send(&mut q, now);
        q.complete("a", Outcome::Done, now + 400, PAIR);
        for _ in 1..44 {
            send(&mut q, now + 400);
            q.complete("a", Outcome::Done, now + 400, PAIR);
        }
        // The last of the burst keeps the margin.
        let margin = super::super::pair::margin_ms(6_000);
        assert_eq!(q.next(now + 400, PAIR), Next::WaitUntil(now + 400 + margin));
        send(&mut q, now + 400 + margin);
        q.complete("a", Outcome::Done, now + 400 + margin, PAIR);
        assert_eq!(
            q.next(now + 400, PAIR),
            Next::WaitUntil(now + 400 + 6_000 + margin),
            "Meta may have counted the first at its answer, 400 ms after it left"
        );
    }

    #[test]
    fn a_requeued_message_still_expires() {
        let mut q = SenderQueue::new();
        let now = 1_000_000;
        q.push(
            &Entry {
                id: 1,
                to: "a".into(),
                priority: Priority::Normal,
                due_ms: now,
                expires_at_ms: Some(now + 1_000),
                retry_at_ms: None,
                held: false,
            },
            now,
            PAIR,
        );
        assert_eq!(send(&mut q, now).0, 1);
        assert_eq!(
            q.take_expired(now + 2_000, PAIR),
            Vec::<u64>::new(),
            "in flight"
        );
        // The sender paused: back in the queue, waiting.
        q.complete("a", Outcome::Requeue, now + 10, PAIR);
        assert_eq!(
            q.next(now + 10, PAIR),
            Next::Send {
                id: 1,
                to: "a".into()
            }
        );
        q.complete("a", Outcome::Requeue, now + 20, PAIR);
        assert_eq!(q.take_expired(now + 1_000, PAIR), vec![1]);
        assert_eq!((q.waiting(), q.in_flight()), (0, 0));
        assert_eq!(q.next(now + 1_000, PAIR), Next::Idle);
    }

    #[test]
    fn parked_recipients_come_back_as_given() {
        let mut q = SenderQueue::new();
        let now = 1_000_000;
        for (id, to) in [
            (1, "14155551234"),
            (2, "0123"),
            (3, "x1"),
            (4, "99999999999999999999"),
        ] {
            q.push(
                &Entry {
                    id,
                    to: to.into(),
                    priority: Priority::Normal,
                    due_ms: now + 10,
                    expires_at_ms: None,
                    retry_at_ms: None,
                    held: false,
                },
                now,
                PAIR,
            );
        }
        let mut got: Vec<(u64, String)> = (0..4)
            .map(|_| {
                let (id, to) = send(&mut q, now + 10);
                (id, to.to_string())
            })
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                (1, "14155551234".to_string()),
                (2, "0123".to_string()),
                (3, "x1".to_string()),
                (4, "99999999999999999999".to_string())
            ]
        );
    }

    #[test]
    fn scheduled_messages_wait_and_expired_ones_are_taken_out() {
        let mut q = SenderQueue::new();
        let now = 1_000_000;
        q.push(
            &Entry {
                id: 1,
                to: "a".into(),
                priority: Priority::Normal,
                due_ms: now + 10_000,
                expires_at_ms: None,
                retry_at_ms: None,
                held: false,
            },
            now,
            PAIR,
        );
        q.push(
            &Entry {
                id: 2,
                to: "b".into(),
                priority: Priority::Normal,
                due_ms: now,
                expires_at_ms: Some(now + 50),
                retry_at_ms: None,
                held: false,
            },
            now,
            PAIR,
        );
        q.push(
            &Entry {
                id: 3,
                to: "c".into(),
                priority: Priority::Normal,
                due_ms: now + 100,
                expires_at_ms: Some(now + 50),
                retry_at_ms: None,
                held: false,
            },
            now,
            PAIR,
        );
        assert_eq!(q.take_expired(now + 60, PAIR), vec![2, 3]);
        assert_eq!(q.waiting(), 1);
        assert_eq!(q.next(now + 60, PAIR), Next::WaitUntil(now + 10_000));
        assert_eq!(send(&mut q, now + 10_000).0, 1);
    }

    #[test]
    fn contains_sees_waiting_and_in_flight_messages_and_a_double_push_sends_once() {
        let mut q = SenderQueue::new();
        let now = 1_000_000;
        let entry = |id, due_ms| Entry {
            id,
            to: "a".into(),
            priority: Priority::Normal,
            due_ms,
            expires_at_ms: None,
            retry_at_ms: None,
            held: false,
        };
        q.push(&entry(1, now), now, PAIR);
        assert!(q.contains(1, "a", Priority::Normal));
        assert!(!q.contains(3, "a", Priority::Normal));
        assert_eq!(send(&mut q, now).0, 1);
        assert!(q.contains(1, "a", Priority::Normal), "in flight");
        q.complete("a", Outcome::Done, now, PAIR);
        assert!(!q.contains(1, "a", Priority::Normal));

        // A parked message submitted twice (a resync) is filed once when it becomes due.
        q.push(&entry(2, now + 60_000), now, PAIR);
        q.push(&entry(2, now + 60_000), now, PAIR);
        assert_eq!(send(&mut q, now + 60_000).0, 2);
        assert_eq!(q.waiting(), 0, "counted once");
        q.complete("a", Outcome::Done, now + 60_000, PAIR);
        assert!(!matches!(q.next(now + 60_000, PAIR), Next::Send { .. }));
        assert_eq!((q.waiting(), q.in_flight()), (0, 0));
    }

    #[test]
    fn a_removed_message_stops_counting_wherever_it_waits() {
        let mut q = SenderQueue::new();
        let now = 1_000_000;
        let entry = |id, to: &str, due_ms, expires_at_ms| Entry {
            id,
            to: to.into(),
            priority: Priority::Normal,
            due_ms,
            expires_at_ms,
            retry_at_ms: None,
            held: false,
        };
        let later = now + 60_000;
        q.push(&entry(1, "a", now, None), now, PAIR);
        q.push(&entry(2, "a", now, Some(later)), now, PAIR);
        q.push(&entry(3, "b", later, None), now, PAIR);
        q.push(&entry(4, "c", later, Some(later + 1)), now, PAIR);
        q.push(&entry(5, "d", now, None), now, PAIR);
        assert_eq!(q.waiting(), 5);
        assert_eq!(send(&mut q, now).0, 1);

        let n = Priority::Normal;
        assert!(
            !q.remove(1, "a", n, Some(now), now, PAIR),
            "in flight: left to its attempt"
        );
        assert!(
            q.remove(2, "a", n, Some(now), now, PAIR),
            "waiting in its lane"
        );
        assert!(
            q.remove(3, "b", n, Some(later), now, PAIR),
            "parked, no ttl"
        );
        assert!(
            q.remove(4, "c", n, Some(later), now, PAIR),
            "parked, with a ttl"
        );
        assert!(!q.remove(3, "b", n, Some(later), now, PAIR), "only once");
        assert_eq!((q.waiting(), q.in_flight()), (1, 1));

        q.complete("a", Outcome::DoneWithoutRequest, now, PAIR);
        assert_eq!(send(&mut q, now).0, 5);
        q.complete("d", Outcome::Done, now, PAIR);
        // Cancelled while its attempt ran, which found it so and ended: counted once.
        q.push(&entry(6, "e", now, None), now, PAIR);
        q.push(&entry(7, "e", now, None), now, PAIR);
        assert_eq!(send(&mut q, now).0, 6);
        q.complete("e", Outcome::DoneWithoutRequest, now, PAIR);
        assert!(!q.remove(6, "e", n, Some(now), now, PAIR), "already gone");
        assert_eq!((q.waiting(), q.in_flight()), (1, 0));
        // A parked message whose time came while nobody looked is in its lane by now.
        q.push(&entry(8, "f", now + 5, None), now, PAIR);
        assert!(q.remove(8, "f", n, Some(now + 5), now + 5, PAIR));
        assert_eq!(q.waiting(), 1);
        // Cancelled before its enqueue handed it over: counted out at the cancel, in (to no
        // effect) when it arrives, and never sent.
        // (With a ttl, so that it cannot expire and be counted out a second time either.)
        assert!(q.remove(9, "g", n, Some(later), now + 5, PAIR));
        q.push(&entry(9, "g", later, Some(later)), now + 5, PAIR);
        assert_eq!(q.waiting(), 1, "only 7");
        assert_eq!(send(&mut q, now + 5).0, 7);
        q.complete("e", Outcome::Done, now + 5, PAIR);
        // Nothing left: neither the parked nor the expiring ones come back.
        assert_eq!(q.take_expired(later + 1, PAIR), Vec::<u64>::new());
        assert_eq!(q.next(later + 1, PAIR), Next::Idle);
        assert_eq!((q.waiting(), q.in_flight()), (0, 0));
    }

    #[test]
    fn an_expired_parked_message_retried_goes_at_once_and_a_cancel_after_an_expiry_counts_once() {
        let mut q = SenderQueue::new();
        let now = 1_000_000;
        let n = Priority::Normal;
        let later = now + 60_000;
        let entry = |id, due_ms, expires_at_ms| Entry {
            id,
            to: "a".into(),
            priority: n,
            due_ms,
            expires_at_ms,
            retry_at_ms: None,
            held: false,
        };
        // Parked for later, expired before its time (a paused sender), then retried: it goes
        // now, not at its old send_at, and counts once.
        q.push(&entry(1, later, Some(now + 10)), now, PAIR);
        assert_eq!(q.take_expired(now + 10, PAIR), vec![1]);
        assert_eq!(q.waiting(), 0);
        q.push(&entry(1, now + 20, None), now + 20, PAIR);
        assert_eq!(q.waiting(), 1);
        assert_eq!(send(&mut q, now + 20).0, 1);
        q.complete("a", Outcome::Done, now + 20, PAIR);
        assert_eq!(
            q.next(later, PAIR),
            Next::Idle,
            "the old parked entry is gone"
        );
        assert_eq!((q.waiting(), q.in_flight()), (0, 0));

        // A retrying message that expires, and is cancelled before the loop marks it expired:
        // counted out once, by the expiry.
        q.push(&entry(2, now + 30, Some(later)), now + 30, PAIR);
        q.push(&entry(3, now + 30, None), now + 30, PAIR);
        assert_eq!(send(&mut q, now + 30).0, 2);
        q.complete("a", Outcome::Retry { at_ms: later + 5 }, now + 30, PAIR);
        assert_eq!(q.take_expired(later, PAIR), vec![2]);
        assert!(!q.remove(2, "a", n, None, later, PAIR));
        assert_eq!(q.waiting(), 1, "3 still waits");
        assert_eq!(send(&mut q, later).0, 3);
    }

    #[test]
    fn a_retry_that_leaves_unsent_takes_its_backoff_along_but_not_a_131056() {
        let mut q = SenderQueue::new();
        let now = 1_000_000;
        let n = Priority::Normal;
        let entry = |id, expires_at_ms| Entry {
            id,
            to: "a".into(),
            priority: n,
            due_ms: now,
            expires_at_ms,
            retry_at_ms: None,
            held: false,
        };
        q.push(&entry(1, None), now, PAIR);
        q.push(&entry(2, Some(now + 10_000)), now, PAIR);
        q.push(&entry(3, None), now, PAIR);
        q.push(&entry(4, None), now, PAIR);

        // 1 fails for now: its backoff holds the lane, and 2 behind it.
        assert_eq!(send(&mut q, now).0, 1);
        q.complete(
            "a",
            Outcome::Retry {
                at_ms: now + 60_000,
            },
            now,
            PAIR,
        );
        assert!(!matches!(q.next(now + 1, PAIR), Next::Send { .. }));
        // Cancelled, it leaves, and so does its backoff.
        assert!(q.remove(1, "a", n, None, now + 1, PAIR));
        assert_eq!(send(&mut q, now + 1).0, 2);

        // The same when the retrying message expires instead.
        q.complete(
            "a",
            Outcome::Retry {
                at_ms: now + 60_000,
            },
            now + 1,
            PAIR,
        );
        assert_eq!(q.take_expired(now + 10_000, PAIR), vec![2]);
        assert_eq!(send(&mut q, now + 10_000).0, 3);

        // A 131056 blocks the recipient, whichever message it came with.
        let pair_block = now + 10_000 + 16_000;
        q.complete(
            "a",
            Outcome::PairLimited { at_ms: pair_block },
            now + 10_000,
            PAIR,
        );
        assert!(q.remove(3, "a", n, None, now + 10_001, PAIR));
        assert!(!matches!(q.next(now + 10_001, PAIR), Next::Send { .. }));
        assert_eq!(send(&mut q, pair_block).0, 4);
    }

    #[test]
    fn a_message_that_ends_on_a_131056_leaves_the_pause_and_the_strike_behind() {
        let mut q = SenderQueue::new();
        let now = 1_000_000;
        for id in 1..=3 {
            q.push(&due_now(id, "a", now), now, PAIR);
        }
        // 1 draws a 131056 and waits it out: one strike.
        assert_eq!(send(&mut q, now).0, 1);
        q.complete("a", Outcome::PairLimited { at_ms: now + 1_000 }, now, PAIR);
        assert_eq!(q.pair_strikes("a"), 1);
        assert!(!matches!(q.next(now + 999, PAIR), Next::Send { .. }));
        // Tried again, it draws another, and its ttl would pass before the 4 s are over: it
        // ends, and the recipient still waits them out, with two strikes.
        assert_eq!(send(&mut q, now + 1_000).0, 1);
        q.complete(
            "a",
            Outcome::PairLimitedEnded { at_ms: now + 5_000 },
            now + 1_000,
            PAIR,
        );
        assert_eq!(q.pair_strikes("a"), 2);
        assert_eq!(q.in_flight(), 0);
        for t in [now + 1_000, now + 4_999] {
            assert!(!matches!(q.next(t, PAIR), Next::Send { .. }), "sent at {t}");
        }
        assert_eq!(send(&mut q, now + 5_000).0, 2);
        // A success ends the strikes, as before.
        q.complete("a", Outcome::Done, now + 5_000, PAIR);
        assert_eq!(q.pair_strikes("a"), 0);
        assert_eq!(send(&mut q, now + 5_000).0, 3);
    }

    /// Where a rebuild at `now` starts looking back, as `RecentDepartures` does.
    fn since(now: u64, pair: PairLimit) -> u64 {
        now - 2 * pair.memory_ms()
    }

    /// A normal-priority message to `to`, due at `now`, without a ttl.
    fn due_now(id: u64, to: &str, now: u64) -> Entry {
        Entry {
            id,
            to: to.into(),
            priority: Priority::Normal,
            due_ms: now,
            expires_at_ms: None,
            retry_at_ms: None,
            held: false,
        }
    }

    #[test]
    fn a_seeded_pair_budget_holds_back_waiting_and_later_messages() {
        let pair = PairLimit {
            interval_ms: 500,
            burst: 10,
        };
        let margin = super::super::pair::margin_ms(500);
        let now = 1_000_000;
        let entry = |id, to: &str| due_now(id, to, now);
        // Before the restart, 10 requests to "a" went out at once: the burst is spent.
        let sent: Vec<u64> = (0..10).map(|i| now - 100 + i * 10).collect();
        let mut q = SenderQueue::new();
        q.push(&entry(1, "a"), now, pair);
        q.push(&entry(2, "b"), now, pair);
        assert!(q.seed_pair("a", since(now, pair), &sent, now, pair));
        // "b" goes; "a" waits one interval after the first of the burst (and the margin).
        assert_eq!(send_with(&mut q, now, pair).0, 2);
        let allowed = now - 100 + 500 + margin;
        assert_eq!(q.next(now, pair), Next::WaitUntil(allowed));
        assert_eq!(send_with(&mut q, allowed, pair).0, 1);

        // A recipient with nothing waiting keeps its lane, for a message enqueued later.
        let mut q = SenderQueue::new();
        assert!(q.seed_pair("c", since(now, pair), &sent, now, pair));
        assert_eq!(q.lanes(), 1);
        q.sweep_idle(now);
        assert_eq!(q.lanes(), 1, "not forgotten while its budget is in use");
        q.push(&entry(3, "c"), now, pair);
        assert_eq!(q.next(now, pair), Next::WaitUntil(allowed));
        assert_eq!(send_with(&mut q, allowed, pair).0, 3);
        q.complete("c", Outcome::Done, allowed, pair);
        q.sweep_idle(now + 12 * 500);
        assert_eq!(q.lanes(), 0, "forgotten once the burst is back");

        // Departures long enough ago leave a full budget: no lane for them.
        let mut q = SenderQueue::new();
        assert!(!q.seed_pair("d", since(now, pair), &[now - 600], now, pair));
        assert_eq!(q.lanes(), 0);
        q.push(&entry(4, "d"), now, pair);
        assert_eq!(send_with(&mut q, now, pair).0, 4);
    }

    #[test]
    fn seeding_keeps_what_the_lane_already_spent() {
        let pair = PairLimit {
            interval_ms: 500,
            burst: 2,
        };
        let now = 1_000_000;
        let mut q = SenderQueue::new();
        for id in 1..=3 {
            q.push(&due_now(id, "a", now), now, pair);
        }
        assert_eq!(send_with(&mut q, now, pair).0, 1);
        q.complete("a", Outcome::Done, now, pair);
        // An older, smaller record of departures does not give back what was spent since.
        assert!(q.seed_pair("a", since(now, pair), &[now - 400], now, pair));
        let margin = super::super::pair::margin_ms(500);
        assert_eq!(q.next(now, pair), Next::WaitUntil(now + margin));
    }
}
