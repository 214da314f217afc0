//! Per-sender pacing: never more requests than the rate in force in any sliding window, and an
//! additive-increase / multiplicative-decrease rate when Meta says to slow down.
//!
//! A sliding-window log (the start times of the last window's requests) is exact where a token
//! bucket is not: governor's default burst lets up to twice the rate into one sliding second.
//!
//! Within the window, starts are also paced evenly (a GCRA at the same rate, with a burst of
//! `PACE_SLACK`'s worth): without it the log lets a whole window's worth start at once, those
//! requests queue behind each other on the way out (attempt tasks, connections), and a request
//! delayed by more than the window's margin lands in the next second's arrivals: at 1,000 MPS on a
//! busy machine Meta's side saw up to 1,469 in one sliding second. Paced, the requests of
//! consecutive seconds do not pile up, and the log still caps every window exactly.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The window the limit applies to. A few milliseconds over one second, so that requests which
/// leave exactly `mps` per second still arrive at most `mps` per second despite network jitter.
/// Starts are stamped when the request is written (`restamp`), not when the message was picked,
/// so the margin only has to cover the way from there to Meta; it also bounds the rate, to at
/// most `mps / 1.008` (99.2 %).
pub const WINDOW: Duration = Duration::from_millis(1_008);

/// How much pacing may run ahead: starts within this span go back to back, so the timer's
/// millisecond granularity and a late wake-up cost no throughput.
const PACE_SLACK: Duration = Duration::from_millis(20);

pub struct SlidingWindow {
    starts: VecDeque<Instant>,
    /// Pacing (GCRA): the theoretical time of the next start, and the spacing at the limit
    /// last checked.
    pace_tat: Option<Instant>,
    pace_interval: Duration,
}

impl Default for SlidingWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl SlidingWindow {
    pub fn new() -> Self {
        SlidingWindow {
            starts: VecDeque::new(),
            pace_tat: None,
            pace_interval: Duration::ZERO,
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some(front) = self.starts.front() {
            if now.duration_since(*front) >= WINDOW {
                self.starts.pop_front();
            } else {
                break;
            }
        }
    }

    /// `None` if a request may start now under `limit`, else when the next one may.
    pub fn next_slot(&mut self, now: Instant, limit: u32) -> Option<Instant> {
        self.expire(now);
        let limit = limit.max(1);
        if (self.starts.len() as u32) >= limit {
            // The oldest request that must leave the window before another fits.
            let excess = self.starts.len() + 1 - limit as usize;
            return self.starts.get(excess - 1).map(|t| *t + WINDOW);
        }
        self.pace_interval = WINDOW / limit;
        let burst = (PACE_SLACK.as_nanos() / self.pace_interval.as_nanos().max(1)).max(2) as u32;
        let tolerance = self.pace_interval * (burst - 1);
        // Held until the next start fits. (Waking only once several fit saves timer wake-ups
        // but sends them as a burst, and at 1,000 MPS the burst's spread on the way out pushed
        // arrivals over the limit.)
        match self.pace_tat {
            Some(tat) if tat > now + tolerance => Some(tat - tolerance),
            _ => None,
        }
    }

    /// Records a start at `now` (after `next_slot` said it may).
    pub fn record(&mut self, now: Instant) {
        self.starts.push_back(now);
        let tat = self.pace_tat.map_or(now, |t| t.max(now));
        self.pace_tat = Some(tat + self.pace_interval);
    }

    /// Requests started in the last second.
    pub fn count_last_second(&mut self, now: Instant) -> u32 {
        self.expire(now);
        self.starts
            .iter()
            .filter(|t| now.duration_since(**t) < Duration::from_secs(1))
            .count() as u32
    }
}

/// The rate in force for a sender: its configured MPS, halved on each throttle error from Meta
/// (130429, 4, 80007) and recovered by a tenth of the MPS per calm second.
pub struct Aimd {
    configured: u32,
    current: f64,
    last_change: Instant,
}

impl Aimd {
    pub fn new(mps: u32, now: Instant) -> Self {
        Aimd {
            configured: mps,
            current: mps as f64,
            last_change: now,
        }
    }

    pub fn set_configured(&mut self, mps: u32) {
        self.configured = mps;
        self.current = self.current.min(mps as f64);
    }

    /// Meta said to slow down. Several errors from one burst of requests halve the rate once.
    pub fn throttled(&mut self, now: Instant) {
        if now.duration_since(self.last_change) >= Duration::from_millis(500)
            || self.current >= self.configured as f64
        {
            self.current = (self.current / 2.0).max(1.0);
            self.last_change = now;
        }
    }

    /// The whole-number limit per window now.
    pub fn limit(&mut self, now: Instant) -> u32 {
        let configured = self.configured as f64;
        if self.current < configured {
            let calm = now.duration_since(self.last_change).as_secs_f64();
            if calm >= 1.0 {
                let step = (configured / 10.0).max(1.0) * calm.floor();
                self.current = (self.current + step).min(configured);
                self.last_change = now;
            }
        }
        self.current.floor().max(1.0) as u32
    }

    pub fn current(&self) -> f64 {
        self.current
    }
}

impl SlidingWindow {
    /// Moves the start recorded at `started` to `now`, when the request is actually written: the
    /// time from picking a message to sending it (its store update, a busy machine) then counts
    /// inside the window instead of eating into its margin. Keeps the log in order.
    pub fn restamp(&mut self, started: Instant, now: Instant) {
        if now <= started {
            return;
        }
        let Some(pos) = self.starts.iter().rposition(|t| *t == started) else {
            return;
        };
        self.starts.remove(pos);
        let at = self
            .starts
            .iter()
            .rposition(|t| *t <= now)
            .map_or(0, |i| i + 1);
        self.starts.insert(at, now);
    }

    /// Takes back the start recorded at `started` (the attempt made no request after all).
    pub fn forget(&mut self, started: Instant) {
        if let Some(pos) = self.starts.iter().rposition(|t| *t == started) {
            self.starts.remove(pos);
            if let Some(tat) = self.pace_tat {
                self.pace_tat = Some(tat.checked_sub(self.pace_interval).unwrap_or(tat));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_more_than_limit_in_any_window() {
        let t0 = Instant::now();
        let mut w = SlidingWindow::new();
        let mut sent = Vec::new();
        let mut now = t0;
        // Simulate a loop that always has work: 5 seconds at limit 20.
        while now < t0 + Duration::from_secs(5) {
            match w.next_slot(now, 20) {
                None => {
                    w.record(now);
                    sent.push(now);
                }
                Some(at) => now = at,
            }
        }
        for (i, s) in sent.iter().enumerate() {
            let in_window = sent[i..]
                .iter()
                .take_while(|t| t.duration_since(*s) < Duration::from_secs(1))
                .count();
            assert!(in_window <= 20);
        }
        // And the limit is used: ~20/s over 5 s (the window is 1.008 s).
        assert!(sent.len() >= 98, "{}", sent.len());
    }

    #[test]
    fn restamped_starts_stay_in_order_and_hold_the_window_longer() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut w = SlidingWindow::new();
        for i in 0..3 {
            w.record(t0 + ms(i));
        }
        w.restamp(t0, t0 + ms(5));
        let order: Vec<_> = w.starts.iter().copied().collect();
        assert_eq!(order, vec![t0 + ms(1), t0 + ms(2), t0 + ms(5)]);
        // Full at 3 until the start at 1 ms leaves.
        assert_eq!(w.next_slot(t0 + ms(6), 3), Some(t0 + ms(1) + WINDOW));
        // At 1, the restamped start holds the window after the other two left.
        assert_eq!(
            w.next_slot(t0 + ms(3) + WINDOW, 1),
            Some(t0 + ms(5) + WINDOW)
        );
    }

    #[test]
    fn starts_are_paced_not_bunched() {
        let t0 = Instant::now();
        let mut w = SlidingWindow::new();
        let mut now = t0;
        let mut sent = Vec::new();
        while now < t0 + Duration::from_secs(3) {
            match w.next_slot(now, 1000) {
                None => {
                    w.record(now);
                    sent.push(now);
                }
                Some(at) => now = at,
            }
        }
        // No 50 ms holds more than its share plus the pacing slack (~70 at 1,000 per window).
        for (i, s) in sent.iter().enumerate() {
            let in_50ms = sent[i..]
                .iter()
                .take_while(|t| t.duration_since(*s) < Duration::from_millis(50))
                .count();
            assert!(in_50ms <= 70, "{in_50ms} starts in 50 ms");
        }
        // The rate is still the limit's: 3 s at 1,000 per window.
        assert!(sent.len() >= 2_960, "{}", sent.len());
    }

    #[test]
    fn aimd_halves_then_recovers() {
        let t0 = Instant::now();
        let mut a = Aimd::new(80, t0);
        a.throttled(t0);
        assert_eq!(a.limit(t0), 40);
        a.throttled(t0 + Duration::from_millis(100));
        assert_eq!(
            a.limit(t0 + Duration::from_millis(100)),
            40,
            "one burst halves once"
        );
        assert_eq!(a.limit(t0 + Duration::from_millis(1_200)), 48);
        assert_eq!(a.limit(t0 + Duration::from_secs(60)), 80);
    }
}
