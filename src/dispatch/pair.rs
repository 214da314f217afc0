//! Meta's pair rate limit per recipient: one message every 6 s, with bursts of up to 45 that
//! borrow from the future. A GCRA: one timestamp per recipient.
//!
//! Meta counts a request when it arrives, and a request can arrive as late as its answer
//! comes back. The budget is taken when a request leaves (so that no two take the same
//! allowance) and settled when its answer comes ([`PairBudget::answered`]): a request that
//! found the budget idle and arrived late (it opened a connection, or waited for a busy
//! machine) moves every later allowance by as much, as it does at Meta. Without that, a
//! request sent exactly on time 6 s later can get 131056. The budget also keeps a margin in
//! hand ([`margin_ms`]) for the clocks' other differences: the last message of a full burst,
//! and every later one, waits that much longer. The rate is unchanged.
//!
//! Meta's budget outlives a restart of the daemon, so this one does too: at start it is rebuilt
//! from the answers of the stored messages' requests ([`PairBudget::from_sent`]). A budget
//! runs at most `interval × burst` ahead of the clock, but how far ahead it ran at any moment
//! depends on every request before, back to the last time it was full. So the rebuild looks
//! back twice that span, and starts it from the most the budget can have been at its start
//! (that moment plus `interval × burst`): after a lane that sent at the limit for an hour,
//! the rebuilt budget is as spent as the live one was, not a fresh burst of 45.

/// Slack between our clock and Meta's: 1% of the interval, at least 50 ms.
pub fn margin_ms(interval_ms: u64) -> u64 {
    (interval_ms / 100).max(50)
}

#[derive(Debug, Clone, Copy, Default)]
pub struct PairBudget {
    /// Theoretical arrival time (Unix ms) of the next conforming message.
    tat_ms: u64,
    /// `tat_ms` before the last request took its allowance, to settle it at its answer.
    tat_before_last_ms: u64,
}

impl PairBudget {
    /// When the next message may go (≤ `now_ms` means now).
    pub fn allowed_at(&self, interval_ms: u64, burst: u32) -> u64 {
        let tolerance = interval_ms.saturating_mul(burst.saturating_sub(1) as u64);
        (self.tat_ms + margin_ms(interval_ms)).saturating_sub(tolerance)
    }

    pub fn consume(&mut self, now_ms: u64, interval_ms: u64) {
        self.tat_before_last_ms = self.tat_ms;
        self.tat_ms = self.tat_ms.max(now_ms) + interval_ms;
    }

    /// The last request (one is out at a time) was answered at `now_ms`: Meta counted it
    /// when it arrived, at the latest now, so it is counted as arriving now.
    pub fn answered(&mut self, now_ms: u64, interval_ms: u64) {
        self.tat_ms = self
            .tat_ms
            .max(self.tat_before_last_ms.max(now_ms) + interval_ms);
    }

    /// True when the full burst is available again (the lane can be forgotten).
    pub fn is_full(&self, now_ms: u64) -> bool {
        self.tat_ms <= now_ms
    }
}

impl PairBudget {
    /// The budget left by requests answered at `sent_ms` (Unix ms, in time order): each is
    /// consumed as it was once settled at its answer, on top of `start_tat_ms`, what the
    /// budget may have been before the first of them (0: nothing).
    pub fn from_sent(start_tat_ms: u64, sent_ms: &[u64], interval_ms: u64) -> PairBudget {
        let mut budget = PairBudget {
            tat_ms: start_tat_ms,
            tat_before_last_ms: start_tat_ms,
        };
        for &at in sent_ms {
            budget.consume(at, interval_ms);
        }
        budget
    }

    /// Keeps whichever of the two budgets has less left.
    pub fn merge(&mut self, other: PairBudget) {
        self.tat_ms = self.tat_ms.max(other.tat_ms);
    }

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
        let margin = margin_ms(6_000);
        assert_eq!(margin, 60);
        for _ in 0..44 {
            assert!(b.allowed_at(6_000, 45) <= now);
            b.consume(now, 6_000);
        }
        // The last of the burst keeps the margin, and so does every later one.
        assert_eq!(b.allowed_at(6_000, 45), now + margin);
        b.consume(now + margin, 6_000);
        assert_eq!(b.allowed_at(6_000, 45), now + 6_000 + margin);
        b.consume(now + 6_000 + margin, 6_000);
        assert_eq!(b.allowed_at(6_000, 45), now + 2 * 6_000 + margin);
        assert!(!b.is_full(now));
        assert!(b.is_full(now + 46 * 6_000));
    }

    #[test]
    fn a_late_answer_moves_the_allowances_after_it() {
        let now = 1_000_000;
        let margin = margin_ms(6_000);
        // The first request of a burst found the budget idle, and its answer took 300 ms: it
        // may have reached Meta that late, and Meta's next allowances count from there.
        let mut b = PairBudget::default();
        b.consume(now, 6_000);
        b.answered(now + 300, 6_000);
        for i in 1..45 {
            assert!(b.allowed_at(6_000, 45) <= now + 300 + margin, "burst {i}");
            b.consume(now + 300 + i, 6_000);
            b.answered(now + 300 + i, 6_000);
        }
        assert_eq!(b.allowed_at(6_000, 45), now + 300 + 6_000 + margin);

        // Once the budget runs ahead of the clock, an answer changes nothing.
        let before = b.allowed_at(6_000, 45);
        b.consume(before, 6_000);
        let taken = b.allowed_at(6_000, 45);
        b.answered(before + 250, 6_000);
        assert_eq!(b.allowed_at(6_000, 45), taken);

        // Consumed at the answers, a rebuilt budget is the live one.
        let mut live = PairBudget::default();
        let answers = [now + 120, now + 400, now + 700];
        for (i, &at) in answers.iter().enumerate() {
            live.consume(now + 100 * i as u64, 6_000);
            live.answered(at, 6_000);
        }
        assert_eq!(
            PairBudget::from_sent(0, &answers, 6_000).allowed_at(6_000, 45),
            live.allowed_at(6_000, 45)
        );
    }

    #[test]
    fn a_rebuild_after_steady_traffic_is_as_spent_as_the_live_budget() {
        let (interval, burst) = (6_000, 45);
        let memory = interval * burst as u64;
        // A burst, then an hour at the limit: each request as soon as it is allowed.
        let mut live = PairBudget::default();
        let mut answers = Vec::new();
        let mut t = 1_000_000;
        for _ in 0..(45 + 600) {
            t = t.max(live.allowed_at(interval, burst));
            live.consume(t, interval);
            live.answered(t + 100, interval);
            answers.push(t + 100);
        }
        let now = t + 1_000;
        let since = now - 2 * memory;
        let recent: Vec<u64> = answers.iter().copied().filter(|&a| a >= since).collect();
        let rebuilt = PairBudget::from_sent(since + memory, &recent, interval);
        let (live_at, rebuilt_at) = (
            live.allowed_at(interval, burst),
            rebuilt.allowed_at(interval, burst),
        );
        assert!(rebuilt_at >= live_at, "never looser than the live budget");
        assert!(
            rebuilt_at <= live_at + interval,
            "{rebuilt_at} vs {live_at}"
        );
        assert!(live_at > now, "the live budget is spent");
        // Without the bound on where it started, the same requests read as a fresh burst.
        let last_span: Vec<u64> = answers
            .iter()
            .copied()
            .filter(|&a| a >= now - memory)
            .collect();
        assert!(PairBudget::from_sent(0, &last_span, interval).allowed_at(interval, burst) < now);
    }

    #[test]
    fn a_budget_rebuilt_from_sent_times_is_the_one_that_sent_them() {
        let now = 1_000_000;
        let sent: Vec<u64> = (0..45).map(|i| now + i * 100).collect();
        let mut live = PairBudget::default();
        for &at in &sent {
            live.consume(at, 6_000);
        }
        let rebuilt = PairBudget::from_sent(0, &sent, 6_000);
        let later = now + 5_000;
        assert_eq!(
            rebuilt.allowed_at(6_000, 45),
            live.allowed_at(6_000, 45),
            "the same budget"
        );
        // The burst is spent: the next waits about one interval after the first of it.
        assert!(rebuilt.allowed_at(6_000, 45) > later);
        assert!(!rebuilt.is_full(later));

        // Requests long past leave a full budget (nothing to remember).
        assert!(PairBudget::from_sent(0, &[now - 7_000], 6_000).is_full(now));

        // Merging keeps the budget with less left.
        let mut fresh = PairBudget::default();
        fresh.merge(rebuilt);
        assert_eq!(fresh.allowed_at(6_000, 45), rebuilt.allowed_at(6_000, 45));
        let mut spent = rebuilt;
        spent.merge(PairBudget::default());
        assert_eq!(spent.allowed_at(6_000, 45), rebuilt.allowed_at(6_000, 45));
    }
}
