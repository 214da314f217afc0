//! Meta's messaging limit: per business portfolio, how many unique users it may reach outside a
//! customer-service window in a moving 24 hours (250, 2,000, 10,000, 100,000 or unlimited).
//!
//! Meta documents no error for going over it, and going over hurts the number's standing, so a
//! sender with `messaging_limit` set counts the users its portfolio reached so (a template to a
//! closed window, a fallback template included) and holds a send that would reach one user too
//! many until the oldest reach leaves the 24 hours. Users already counted, and every user whose
//! window is open, are not held. The counts live in the store (`store/reached.rs`), so a restart
//! keeps them.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Mutex;

use serde::Serialize;

use crate::store::{Store, StoreError};
use crate::window::WINDOW_MS;

/// What a send outside the window may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Not counted: the window is open, or the sender has no limit.
    NotCounted,
    /// It may go; `newly` when this send is the one that counts the user (taken back with
    /// [`MessagingLimits::take_back`] if the request did not reach the user).
    Counted { newly: bool },
    /// The portfolio is at its limit: try again at `until_ms`, when a reach leaves the 24 hours.
    Held { until_ms: u64 },
}

/// One portfolio's users reached outside a window in the last 24 hours.
#[derive(Debug, Default)]
struct Portfolio {
    /// User → when last reached.
    reached: HashMap<String, u64>,
    /// The same, ordered by time: the front leaves the 24 hours first.
    by_time: BTreeSet<(u64, String)>,
    /// The reach whose end the last hold was told to wait for: the next hold waits for the
    /// one after it, so that held messages come back one per freed place, not all at once.
    promised: Option<(u64, String)>,
}

impl Portfolio {
    fn load(entries: Vec<(String, u64)>) -> Self {
        let mut p = Portfolio::default();
        for (to, at) in entries {
            p.reach(&to, at);
        }
        p
    }

    /// Forgets the reaches that have left the 24 hours before `now_ms`.
    fn expire(&mut self, now_ms: u64) {
        while let Some((at, to)) = self.by_time.first().cloned() {
            if at + WINDOW_MS > now_ms {
                break;
            }
            self.by_time.pop_first();
            self.reached.remove(&to);
        }
    }

    fn reach(&mut self, to: &str, at_ms: u64) {
        if let Some(prev) = self.reached.insert(to.to_string(), at_ms) {
            self.by_time.remove(&(prev, to.to_string()));
        }
        self.by_time.insert((at_ms, to.to_string()));
    }

    fn admit(&mut self, to: &str, limit: u32, now_ms: u64) -> Admission {
        self.expire(now_ms);
        if self.reached.contains_key(to) {
            self.reach(to, now_ms);
            return Admission::Counted { newly: false };
        }
        if self.reached.len() < limit as usize {
            self.reach(to, now_ms);
            return Admission::Counted { newly: true };
        }
        let after = match self.promised.take() {
            Some(p) if p.0 + WINDOW_MS > now_ms => Bound::Excluded(p),
            _ => Bound::Unbounded,
        };
        let next = self
            .by_time
            .range((after, Bound::Unbounded))
            .next()
            .cloned();
        let until_ms = match &next {
            Some((at, _)) => at + WINDOW_MS,
            // More held than places freeing in the next 24 hours (or a limit lowered below
            // the count): look again when the last of them has freed.
            None => self.by_time.last().map_or(now_ms, |(at, _)| at + WINDOW_MS),
        };
        self.promised = next.or_else(|| self.by_time.last().cloned());
        Admission::Held {
            until_ms: until_ms.max(now_ms + 1),
        }
    }

    fn take_back(&mut self, to: &str, at_ms: u64) {
        if self.reached.get(to) == Some(&at_ms) {
            self.reached.remove(to);
            self.by_time.remove(&(at_ms, to.to_string()));
        }
    }
}

/// What `/v1/stats` shows of a sender's messaging limit.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MessagingLimitSnapshot {
    pub portfolio: String,
    pub limit: u32,
    /// Unique users reached outside a window in the last 24 hours.
    pub reached_24h: u64,
    /// At the limit: when the next place frees (RFC 3339). New users wait until then.
    pub full_until: Option<String>,
}

/// The portfolios of the senders with a `messaging_limit`, each read from the store the first
/// time it is needed.
#[derive(Debug, Default)]
pub struct MessagingLimits {
    portfolios: Mutex<HashMap<String, Portfolio>>,
}

impl MessagingLimits {
    fn with<R>(
        &self,
        store: &Store,
        portfolio: &str,
        now_ms: u64,
        f: impl FnOnce(&mut Portfolio) -> R,
    ) -> Result<R, StoreError> {
        let mut map = self.portfolios.lock().unwrap_or_else(|p| p.into_inner());
        let p = match map.entry(portfolio.to_string()) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let since = now_ms.saturating_sub(WINDOW_MS);
                e.insert(Portfolio::load(store.reached_since(portfolio, since)?))
            }
        };
        Ok(f(p))
    }

    /// Whether a send from `portfolio` (at `limit`) reaching `to` outside its window may go at
    /// `now_ms`. A counted reach is written to the store, durable with the commit of the
    /// message's `sending`.
    pub fn admit(
        &self,
        store: &Store,
        portfolio: &str,
        limit: u32,
        to: &str,
        now_ms: u64,
    ) -> Result<Admission, StoreError> {
        let admission = self.with(store, portfolio, now_ms, |p| p.admit(to, limit, now_ms))?;
        if let Admission::Counted { newly } = admission {
            if let Err(e) = store.record_reached(portfolio, to, now_ms) {
                if newly {
                    self.take_back_in_memory(portfolio, to, now_ms);
                }
                return Err(e);
            }
        }
        Ok(admission)
    }

    /// Takes back the reach of `to` counted at `at_ms`: its request did not reach the user.
    pub fn take_back(&self, store: &Store, portfolio: &str, to: &str, at_ms: u64) {
        self.take_back_in_memory(portfolio, to, at_ms);
        if let Err(e) = store.forget_reached(portfolio, to, at_ms) {
            tracing::error!(portfolio, "cannot take back a user's reach: {e}");
        }
    }

    fn take_back_in_memory(&self, portfolio: &str, to: &str, at_ms: u64) {
        let mut map = self.portfolios.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = map.get_mut(portfolio) {
            p.take_back(to, at_ms);
        }
    }

    /// The count of `portfolio` as `/v1/stats` shows it (`None` when the store cannot be read).
    pub fn snapshot(
        &self,
        store: &Store,
        portfolio: &str,
        limit: u32,
        now_ms: u64,
    ) -> Option<MessagingLimitSnapshot> {
        self.with(store, portfolio, now_ms, |p| {
            p.expire(now_ms);
            let full = p.reached.len() >= limit as usize;
            MessagingLimitSnapshot {
                portfolio: portfolio.to_string(),
                limit,
                reached_24h: p.reached.len() as u64,
                full_until: p
                    .by_time
                    .first()
                    .filter(|_| full)
                    .map(|(at, _)| crate::model::format_time(at + WINDOW_MS)),
            }
        })
        .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 60 * 60 * 1000;

    #[test]
    fn new_users_past_the_limit_wait_for_the_oldest_reach_to_leave_the_24_hours() {
        let mut p = Portfolio::default();
        let t0 = 100 * WINDOW_MS;
        assert_eq!(p.admit("a", 2, t0), Admission::Counted { newly: true });
        assert_eq!(p.admit("b", 2, t0 + H), Admission::Counted { newly: true });
        // A user already counted goes, and counts from this reach on.
        assert_eq!(
            p.admit("a", 2, t0 + 2 * H),
            Admission::Counted { newly: false }
        );
        // Full: the first new user waits for b's reach (the oldest now) to leave...
        assert_eq!(
            p.admit("c", 2, t0 + 3 * H),
            Admission::Held {
                until_ms: t0 + H + WINDOW_MS
            }
        );
        // ...the next for a's, not for the same place.
        assert_eq!(
            p.admit("d", 2, t0 + 3 * H),
            Admission::Held {
                until_ms: t0 + 2 * H + WINDOW_MS
            }
        );
        // When b's reach has left, one new user goes; the next new one waits for the place
        // after the one d was promised.
        let later = t0 + H + WINDOW_MS;
        assert_eq!(p.admit("c", 2, later), Admission::Counted { newly: true });
        assert_eq!(
            p.admit("e", 2, later),
            Admission::Held {
                until_ms: later + WINDOW_MS
            }
        );
        // d, back when a's reach has left, goes.
        let at_d = t0 + 2 * H + WINDOW_MS;
        assert_eq!(p.admit("d", 2, at_d), Admission::Counted { newly: true });
        assert_eq!(p.reached.len(), 2);
    }

    #[test]
    fn a_reach_taken_back_frees_its_place() {
        let mut p = Portfolio::default();
        let t0 = 10 * WINDOW_MS;
        assert_eq!(p.admit("a", 1, t0), Admission::Counted { newly: true });
        assert!(matches!(p.admit("b", 1, t0), Admission::Held { .. }));
        p.take_back("a", t0);
        assert_eq!(p.admit("b", 1, t0 + 1), Admission::Counted { newly: true });
        // A take-back of an older reach leaves a later one counted.
        assert_eq!(p.admit("b", 1, t0 + 5), Admission::Counted { newly: false });
        p.take_back("b", t0 + 1);
        assert!(matches!(p.admit("c", 1, t0 + 6), Admission::Held { .. }));
    }

    #[test]
    fn more_held_than_places_look_again_when_the_last_has_freed() {
        let mut p = Portfolio::default();
        let t0 = 10 * WINDOW_MS;
        assert_eq!(p.admit("a", 1, t0), Admission::Counted { newly: true });
        let first = p.admit("b", 1, t0 + 1);
        assert_eq!(
            first,
            Admission::Held {
                until_ms: t0 + WINDOW_MS
            }
        );
        // No second place frees within the 24 hours: the same time, never earlier than now.
        assert_eq!(p.admit("c", 1, t0 + 2), first);
        // A limit raised makes room; one lowered below the count holds every new user.
        assert_eq!(p.admit("z", 2, t0 + 3), Admission::Counted { newly: true });
        assert!(matches!(p.admit("y", 1, t0 + 4), Admission::Held { .. }));
    }

    #[tokio::test]
    async fn counts_are_read_back_from_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let now = crate::model::now_ms();
        {
            let store = Store::open_for_test(dir.path());
            let limits = MessagingLimits::default();
            for to in ["15550001", "15550002"] {
                assert_eq!(
                    limits.admit(&store, "acme", 2, to, now).unwrap(),
                    Admission::Counted { newly: true }
                );
            }
            // One reach older than 24 hours, as a store kept from the day before holds.
            store
                .record_reached("acme", "15550003", now - WINDOW_MS - 1)
                .unwrap();
            store.commit().await.unwrap();
        }
        let store = Store::open_for_test(dir.path());
        let limits = MessagingLimits::default();
        let snap = limits.snapshot(&store, "acme", 2, now + 1).unwrap();
        assert_eq!(snap.reached_24h, 2);
        assert_eq!(
            snap.full_until,
            Some(crate::model::format_time(now + WINDOW_MS))
        );
        assert!(matches!(
            limits
                .admit(&store, "acme", 2, "15550004", now + 2)
                .unwrap(),
            Admission::Held { .. }
        ));
        assert_eq!(
            limits
                .admit(&store, "acme", 2, "15550001", now + 3)
                .unwrap(),
            Admission::Counted { newly: false }
        );
    }
}
