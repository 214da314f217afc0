//! The two rate rules Meta applies to sends: the number's messages per second (a 1-second
//! sliding window by arrival time) and the pair rate per (number, recipient) (GCRA).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

const SECOND: Duration = Duration::from_secs(1);

/// Arrival times of the last second, for one number.
#[derive(Debug, Default)]
pub(crate) struct SlidingWindow {
    arrivals: VecDeque<Instant>,
    /// The most arrivals seen in any 1-second window.
    max: u64,
}

impl SlidingWindow {
    /// Records an arrival at `now`; returns how many arrivals the preceding second already had.
    pub fn arrive(&mut self, now: Instant) -> usize {
        self.prune(now);
        let before = self.arrivals.len();
        self.arrivals.push_back(now);
        // Every window ending at an arrival is a candidate, so this is the exact maximum.
        self.max = self.max.max(self.arrivals.len() as u64);
        before
    }

    /// Arrivals within the second before `now`.
    pub fn current(&mut self, now: Instant) -> u64 {
        self.prune(now);
        self.arrivals.len() as u64
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    pub fn reset_max(&mut self) {
        self.max = 0;
    }

    pub fn clear(&mut self) {
        self.arrivals.clear();
        self.max = 0;
    }

    /// Drops arrivals older than one second: window (now - 1 s, now].
    fn prune(&mut self, now: Instant) {
        while let Some(&front) = self.arrivals.front() {
            if now.saturating_duration_since(front) >= SECOND {
                self.arrivals.pop_front();
            } else {
                break;
            }
        }
    }
}

/// A GCRA limiter per recipient: one message per `period`, bursts of `burst` that borrow
/// from the future ("45 in a 6-second burst, but this borrows from your future quota").
#[derive(Debug)]
pub(crate) struct PairLimiter {
    period: Duration,
    /// How far ahead of now the theoretical arrival time may run: (burst - 1) periods.
    tolerance: Duration,
    /// Theoretical arrival time of the next message, per recipient.
    tat: HashMap<String, Instant>,
    /// Size at which entries already in the past (equal to fresh ones) are dropped.
    prune_at: usize,
}

const PRUNE_MIN: usize = 4096;

impl PairLimiter {
    pub fn new(period: Duration, burst: u32) -> Self {
        PairLimiter {
            period,
            tolerance: period * burst.saturating_sub(1),
            tat: HashMap::new(),
            prune_at: PRUNE_MIN,
        }
    }

    /// Takes one message for `recipient` if its pair rate allows it.
    pub fn try_take(&mut self, recipient: &str, now: Instant) -> bool {
        let tat = self.tat.get(recipient).map_or(now, |&t| t.max(now));
        if tat.saturating_duration_since(now) > self.tolerance {
            return false;
        }
        let next = tat + self.period;
        match self.tat.get_mut(recipient) {
            Some(slot) => *slot = next,
            None => {
                self.tat.insert(recipient.to_string(), next);
                if self.tat.len() >= self.prune_at {
                    // Amortised clean-up keeps memory bounded by recently active recipients.
                    self.tat.retain(|_, t| *t > now);
                    self.prune_at = (self.tat.len() * 2).max(PRUNE_MIN);
                }
            }
        }
        true
    }

    pub fn clear(&mut self) {
        self.tat.clear();
        self.prune_at = PRUNE_MIN;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_counts_the_last_second() {
        let mut w = SlidingWindow::default();
        let t0 = Instant::now();
        assert_eq!(w.arrive(t0), 0);
        assert_eq!(w.arrive(t0 + Duration::from_millis(500)), 1);
        assert_eq!(w.arrive(t0 + Duration::from_millis(999)), 2);
        // t0 leaves the window exactly one second later.
        assert_eq!(w.arrive(t0 + Duration::from_millis(1000)), 2);
        assert_eq!(w.max(), 3);
        assert_eq!(w.current(t0 + Duration::from_secs(5)), 0);
    }

    #[test]
    fn gcra_allows_the_burst_then_one_per_period() {
        let period = Duration::from_secs(6);
        let mut l = PairLimiter::new(period, 45);
        let t0 = Instant::now();
        for _ in 0..45 {
            assert!(l.try_take("a", t0));
        }
        assert!(!l.try_take("a", t0));
        assert!(l.try_take("b", t0), "other recipients are not affected");
        assert!(!l.try_take("a", t0 + period - Duration::from_millis(1)));
        assert!(l.try_take("a", t0 + period));
        assert!(!l.try_take("a", t0 + period));
    }
}
