//! The requests of the last moments before a restart, read from the store at start, so that
//! the pair budgets and the senders' windows of departures carry on where the last run left
//! them: Meta still counts those requests, and nothing the limits need lives only in memory.
//!
//! A request leaves after its message's `sending` entry is committed and before the entry that
//! follows it (the answer: `sent`, `retrying`, `failed`, ...). Both the pair budget and the
//! window of departures count each request at its answer, the latest it can have left (and,
//! for Meta's pair rate, arrived), as a running daemon settles them; one with no answer (the
//! daemon stopped mid-request) counts as leaving at the restart. Both err on the side of
//! waiting.
//!
//! [`RecentDepartures::observe`] sees every stored message during the start-up scan, so it
//! looks no further than `updated_at` for all but the messages touched lately.

use std::collections::HashMap;

use crate::model::{Message, State};

use super::queue::PairLimit;
use super::rate::WINDOW;

/// How far back departures are kept for the windows of departures: their second, with room
/// for a scan that started a while before the windows are seeded.
const WINDOW_LOOKBACK_MS: u64 = 2 * WINDOW.as_millis() as u64;

/// Recent departures per sender, gathered from the stored messages.
pub struct RecentDepartures {
    /// The restart: when a request with no answer counts as having left.
    now_ms: u64,
    /// Entries older than this cannot matter any more.
    since_ms: u64,
    /// Answers older than this are out of every window of departures.
    window_since_ms: u64,
    pub(super) senders: HashMap<String, SenderDepartures>,
}

#[derive(Default)]
pub(super) struct SenderDepartures {
    /// The look-back's start: no request answered before it is in `pairs`.
    pub since_ms: u64,
    /// When each recent request was answered (or the restart, if it was not), per recipient
    /// (not in order), none before `since_ms`.
    pub pairs: HashMap<String, Vec<u64>>,
    /// When each request of the last moments had left at the latest (its answer); `None`: it
    /// had no answer, the daemon stopped while it was out.
    pub left_by: Vec<Option<u64>>,
}

impl RecentDepartures {
    /// Keeps what can still matter at `now_ms`: the pair budgets look back `2 × interval ×
    /// burst`.
    pub fn new(now_ms: u64, pair: PairLimit) -> RecentDepartures {
        // Twice the budget's reach: see `pair.rs` on the rebuild.
        let pair_memory = pair.memory_ms().saturating_mul(2);
        RecentDepartures {
            now_ms,
            since_ms: now_ms.saturating_sub(pair_memory.max(WINDOW_LOOKBACK_MS)),
            window_since_ms: now_ms.saturating_sub(WINDOW_LOOKBACK_MS),
            senders: HashMap::new(),
        }
    }

    /// Notes the requests `m` made lately. Cheap for the rest: one comparison.
    pub fn observe(&mut self, m: &Message) {
        if !self.may_have_requests(m) {
            return;
        }
        // Newest first; the history is in time order, so the first entry too old ends it.
        let mut answered_at = None;
        for h in m.history.iter().rev() {
            // A request counts by its answer: one sent before `since_ms` and answered after
            // it is noted too.
            if h.state == State::Sending && answered_at.is_none_or(|a| a >= self.since_ms) {
                self.note(m, answered_at);
            }
            if h.at_ms < self.since_ms {
                break;
            }
            answered_at = Some(h.at_ms);
        }
    }

    /// Whether `m` was touched recently enough to hold requests that still count.
    fn may_have_requests(&self, m: &Message) -> bool {
        m.updated_at_ms >= self.since_ms
    }

    /// An empty gathering over the same moments, for one part of a scan read side by side
    /// with others (see [`merge`](Self::merge)).
    pub fn empty_like(&self) -> RecentDepartures {
        RecentDepartures {
            senders: HashMap::new(),
            ..*self
        }
    }

    /// Adds what `part` (made by [`empty_like`](Self::empty_like)) gathered.
    pub fn merge(&mut self, part: RecentDepartures) {
        for (name, theirs) in part.senders {
            let since_ms = self.since_ms;
            let ours = self
                .senders
                .entry(name)
                .or_insert_with(|| SenderDepartures {
                    since_ms,
                    ..SenderDepartures::default()
                });
            for (to, times) in theirs.pairs {
                ours.pairs.entry(to).or_default().extend(times);
            }
            ours.left_by.extend(theirs.left_by);
        }
    }

    fn note(&mut self, m: &Message, answered_ms: Option<u64>) {
        let counted_ms = answered_ms.unwrap_or(self.now_ms);
        let sender = match self.senders.get_mut(&m.sender) {
            Some(s) => s,
            None => {
                let since_ms = self.since_ms;
                self.senders
                    .entry(m.sender.clone())
                    .or_insert_with(|| SenderDepartures {
                        since_ms,
                        ..SenderDepartures::default()
                    })
            }
        };
        match sender.pairs.get_mut(&m.to) {
            Some(times) => times.push(counted_ms),
            None => {
                sender.pairs.insert(m.to.clone(), vec![counted_ms]);
            }
        }
        if answered_ms.is_none_or(|a| a >= self.window_since_ms) {
            sender.left_by.push(answered_ms);
        }
    }

    /// Requests noted, over all senders.
    pub fn len(&self) -> usize {
        self.senders
            .values()
            .flat_map(|s| s.pairs.values())
            .map(Vec::len)
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{HistoryEntry, Priority};

    fn message(to: &str, history: &[(u64, State)]) -> Message {
        Message {
            id: 1,
            sender: "main".into(),
            to: to.into(),
            kind: "template".into(),
            priority: Priority::Normal,
            state: history.last().map_or(State::Queued, |h| h.1),
            body: "{}".into(),
            fallback_template: None,
            idempotency_key: None,
            metadata: None,
            created_at_ms: history.first().map_or(0, |h| h.0),
            updated_at_ms: history.last().map_or(0, |h| h.0),
            next_attempt_at_ms: 0,
            expires_at_ms: None,
            attempts: 0,
            wamid: None,
            substituted_template: None,
            last_error: None,
            history: history
                .iter()
                .map(|&(at_ms, state)| HistoryEntry {
                    at_ms,
                    state,
                    detail: String::new(),
                })
                .collect(),
        }
    }

    #[test]
    fn requests_of_recent_messages_are_noted_at_their_answers() {
        let now = 10_000_000;
        let pair = super::super::queue::TEST_PAIR;
        let mut r = RecentDepartures::new(now, pair);
        use State::*;
        // Sent a moment ago, then delivered: left between `sending` and `sent`.
        r.observe(&message(
            "a",
            &[
                (now - 900, Queued),
                (now - 500, Sending),
                (now - 400, Sent),
                (now - 10, Delivered),
            ],
        ));
        // Retried: two requests; the first answered too long ago for the window of departures.
        r.observe(&message(
            "a",
            &[
                (now - 60_000, Queued),
                (now - 50_000, Sending),
                (now - 49_000, Retrying),
                (now - 300, Sending),
            ],
        ));
        // Out of the pair budgets' look-back (2 × 270 s), though touched lately by a status.
        r.observe(&message(
            "b",
            &[
                (now - 600_000, Sending),
                (now - 599_000, Sent),
                (now - 5, Read),
            ],
        ));
        // Long ago: not looked at.
        r.observe(&message(
            "c",
            &[(now - 700_000, Sending), (now - 699_000, Sent)],
        ));
        // Sent before the look-back, answered within it: counted at its answer.
        r.observe(&message(
            "e",
            &[(now - 541_000, Sending), (now - 539_000, Sent)],
        ));
        // Never sent.
        r.observe(&message("d", &[(now - 5, Queued)]));

        let main = &r.senders["main"];
        let mut a = main.pairs["a"].clone();
        a.sort_unstable();
        // Each counted at its answer; the one still out at the restart.
        assert_eq!(a, vec![now - 49_000, now - 400, now]);
        assert_eq!(main.pairs["e"], vec![now - 539_000]);
        assert_eq!(main.pairs.len(), 2, "{:?}", main.pairs.keys());
        assert_eq!(main.since_ms, now - 540_000);
        let mut left_by = main.left_by.clone();
        left_by.sort_unstable();
        assert_eq!(left_by, vec![None, Some(now - 400)]);
        assert_eq!(r.len(), 4);
    }

    #[test]
    fn parts_gathered_apart_and_merged_are_what_one_gathering_sees() {
        let now = 10_000_000;
        let pair = super::super::queue::TEST_PAIR;
        use State::*;
        let mut messages = Vec::new();
        for i in 0..6u64 {
            let to = ["a", "b", "c"][i as usize % 3];
            messages.push(message(
                to,
                &[(now - 900 - i, Sending), (now - 800 - i, Sent)],
            ));
        }
        messages.push(message("a", &[(now - 100, Sending)]));
        let mut whole = RecentDepartures::new(now, pair);
        messages.iter().for_each(|m| whole.observe(m));
        let mut merged = RecentDepartures::new(now, pair);
        let (mut first, mut second) = (merged.empty_like(), merged.empty_like());
        messages[..3].iter().for_each(|m| first.observe(m));
        messages[3..].iter().for_each(|m| second.observe(m));
        merged.merge(first);
        merged.merge(second);
        let sorted = |r: &RecentDepartures| {
            let main = &r.senders["main"];
            let mut pairs: Vec<(String, Vec<u64>)> = main
                .pairs
                .iter()
                .map(|(to, t)| {
                    let mut t = t.clone();
                    t.sort_unstable();
                    (to.clone(), t)
                })
                .collect();
            pairs.sort();
            let mut left_by = main.left_by.clone();
            left_by.sort_unstable();
            (main.since_ms, pairs, left_by)
        };
        assert_eq!(sorted(&merged), sorted(&whole));
        assert_eq!(merged.len(), 7);
    }
}
