//! Meta's pair rate limit per recipient: one message every 6 s, with bursts of up to 45 that
//! borrow from the future. A GCRA: one timestamp per recipient.

#[derive(Debug, Clone, Copy, Default)]
pub struct PairBudget {
    /// Theoretical arrival time (Unix ms) of the next conforming message.
    tat_ms: u64,
}

impl PairBudget {
    /// When the next message may go (≤ `now_ms` means now).
    pub fn allowed_at(&self, interval_ms: u64, burst: u32) -> u64 {
        let tolerance = interval_ms.saturating_mul(burst.saturating_sub(1) as u64);
        self.tat_ms.saturating_sub(tolerance)
    }

    pub fn consume(&mut self, now_ms: u64, interval_ms: u64) {
        self.tat_ms = self.tat_ms.max(now_ms) + interval_ms;
    }

    /// True when the full burst is available again (the lane can be forgotten).
    pub fn is_full(&self, now_ms: u64) -> bool {
        self.tat_ms <= now_ms
    }
}

impl PairBudget {
    /// Gives back one message's worth (no request was made after all).
    pub fn refund(&mut self, interval_ms: u64) {
        self.tat_ms = self.tat_ms.saturating_sub(interval_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_of_45_then_one_per_interval() {
        let mut b = PairBudget::default();
        let now = 1_000_000;
        for _ in 0..45 {
            assert!(b.allowed_at(6_000, 45) <= now);
            b.consume(now, 6_000);
        }
        assert_eq!(b.allowed_at(6_000, 45), now + 6_000);
        assert!(!b.is_full(now));
        assert!(b.is_full(now + 45 * 6_000));
    }
}
