//! Log lines that anyone on the other end of a socket can cause (refused peers, unsigned
//! webhooks) or that repeat while something stays broken: the first is written at once, then
//! at most one per period with how many happened since. Unthrottled, they would flood the log
//! and, under journald, use up the service's rate limit so that its other lines are dropped.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct LogEvery {
    every: Duration,
    last: Mutex<Option<Instant>>,
    unlogged: AtomicU64,
}

impl LogEvery {
    pub const fn new(every: Duration) -> LogEvery {
        LogEvery {
            every,
            last: Mutex::new(None),
            unlogged: AtomicU64::new(0),
        }
    }

    /// Counts one occurrence. `Some(n)` when a line is due now: `n` occurrences (this one
    /// included) since the last line.
    pub fn due(&self) -> Option<u64> {
        self.due_at(Instant::now())
    }

    fn due_at(&self, now: Instant) -> Option<u64> {
        self.unlogged.fetch_add(1, Relaxed);
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|at| now.saturating_duration_since(at) < self.every) {
            return None;
        }
        *last = Some(now);
        Some(self.unlogged.swap(0, Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_at_once_then_one_per_period_with_the_count() {
        let log = LogEvery::new(Duration::from_secs(5));
        let t0 = Instant::now();
        assert_eq!(log.due_at(t0), Some(1));
        for ms in [1, 100, 4_999] {
            assert_eq!(log.due_at(t0 + Duration::from_millis(ms)), None);
        }
        assert_eq!(log.due_at(t0 + Duration::from_secs(5)), Some(4));
        assert_eq!(log.due_at(t0 + Duration::from_secs(6)), None);
        assert_eq!(log.due_at(t0 + Duration::from_secs(11)), Some(2));
    }
}
