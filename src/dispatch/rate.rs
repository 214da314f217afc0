//! Per-sender pacing: never more requests than the rate in force in any sliding window, and an
//! additive-increase / multiplicative-decrease rate when Meta says to slow down.
//!
//! A sliding-window log (the start times of the last window's requests) is exact where a token
//! bucket is not: governor's default burst lets up to twice the rate into one sliding second.
//!
//! The window alone would let a whole second's worth start at once. Those requests then reach
//! Meta spread out by their own queueing (the `sending` writes, connections, the server), while
//! the next second's requests, started one by one, arrive promptly: Meta's window, which counts
//! arrivals, then holds more than the rate (seen against the simulator: 22 at 20 MPS, 100 at
//! 80, 1,229 at 1,000). So a [`Pacer`] also spreads the starts evenly, with a burst of only
//! [`PACER_BURST`] worth of requests to catch up after a late wake-up.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The window the limit applies to. A few milliseconds over one second, so that requests which
/// leave exactly `mps` per second still arrive at most `mps` per second despite network jitter;
/// the departure gate stamps requests when they leave, so the margin only covers the way from
/// there to Meta. It also bounds the rate, to at most `mps / 1.008` (99.2 %).
pub const WINDOW: Duration = Duration::from_millis(1_008);

pub struct SlidingWindow {
    starts: VecDeque<Instant>,
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
        if (self.starts.len() as u32) < limit.max(1) {
            return None;
        }
        // The oldest request that must leave the window before another fits.
        let excess = self.starts.len() + 1 - limit.max(1) as usize;
        self.starts.get(excess - 1).map(|t| *t + WINDOW)
    }

    /// Records a start at `at`, which may lie ahead of starts already recorded (a departure
    /// stamped late, see `departures`): the log stays in time order.
    pub fn record(&mut self, at: Instant) {
        let after = self
            .starts
            .iter()
            .rposition(|t| *t <= at)
            .map_or(0, |i| i + 1);
        self.starts.insert(after, at);
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

/// How far a [`Pacer`] may run ahead of its even schedule: after a late wake-up, the requests
/// due within this span may start back to back (at 1,000/s, 20 of them; at 20/s, one).
pub const PACER_BURST: Duration = Duration::from_millis(20);

/// Even spacing of starts: one every `WINDOW / limit` (a GCRA with a tolerance of
/// [`PACER_BURST`]).
#[derive(Default)]
pub struct Pacer {
    /// When the next start would be on schedule.
    tat: Option<Instant>,
}

impl Pacer {
    pub fn new() -> Self {
        Self::default()
    }

    fn gap(limit: u32) -> Duration {
        WINDOW / limit.max(1)
    }

    /// `None` if a request may start now, else when the next one may.
    pub fn next_slot(&self, now: Instant) -> Option<Instant> {
        let earliest = self.tat?.checked_sub(PACER_BURST)?;
        (earliest > now).then_some(earliest)
    }

    pub fn record(&mut self, now: Instant, limit: u32) {
        let base = self.tat.map_or(now, |t| t.max(now));
        self.tat = Some(base + Self::gap(limit));
    }

    /// Gives one start back (the attempt made no request after all).
    pub fn forget(&mut self, limit: u32) {
        self.tat = self.tat.and_then(|t| t.checked_sub(Self::gap(limit)));
    }
}

/// The rate in force for a sender: its configured MPS, halved on each throttle
/// (`CloudError::throttled`: 130429, 131057, the Graph platform's 4, 17, 32, 613 and
/// 80000-80014, a bare 429) and recovered by a tenth of the MPS per calm second.
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

    /// A new configured rate (a reload). A sender at its full rate takes the new one at once,
    /// higher or lower; one that Meta slowed down keeps recovering from where it is.
    pub fn set_configured(&mut self, mps: u32) {
        let at_full_rate = self.current >= self.configured as f64;
        self.configured = mps;
        self.current = match at_full_rate {
            true => mps as f64,
            false => self.current.min(mps as f64),
        };
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
    /// Takes back the start recorded at `started` (the attempt made no request after all).
    pub fn forget(&mut self, started: Instant) {
        if let Some(pos) = self.starts.iter().rposition(|t| *t == started) {
            self.starts.remove(pos);
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
    fn pacer_spreads_starts_evenly() {
        let t0 = Instant::now();
        let mut p = Pacer::new();
        let mut w = SlidingWindow::new();
        let mut sent = Vec::new();
        let mut now = t0;
        while now < t0 + Duration::from_secs(3) {
            match w.next_slot(now, 20).max(p.next_slot(now)) {
                None => {
                    w.record(now);
                    p.record(now, 20);
                    sent.push(now);
                }
                Some(at) => now = at,
            }
        }
        // At 20/s the gap (50.5 ms) exceeds the burst allowance: never two at once.
        for pair in sent.windows(2) {
            assert!(pair[1] - pair[0] >= Duration::from_millis(30), "{pair:?}");
        }
        assert!(sent.len() >= 59, "{}", sent.len());

        // At 1,000/s a late wake-up catches up with at most a burst's worth at once.
        let mut p = Pacer::new();
        p.record(t0, 1_000);
        let later = t0 + Duration::from_millis(500);
        let mut burst = 0;
        while p.next_slot(later).is_none() {
            p.record(later, 1_000);
            burst += 1;
        }
        assert!((20..=22).contains(&burst), "{burst}");
        p.forget(1_000);
        assert_eq!(p.next_slot(later), None);
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

    #[test]
    fn a_reload_sets_the_rate_of_a_sender_at_full_rate_at_once() {
        let t0 = Instant::now();
        let mut a = Aimd::new(100, t0);
        a.set_configured(60);
        assert_eq!(a.limit(t0), 60);
        a.set_configured(100);
        assert_eq!(a.limit(t0), 100, "not climbing back 10 a second");
        // Slowed down by Meta: the reload does not undo that.
        a.throttled(t0);
        a.set_configured(200);
        assert_eq!(a.limit(t0), 50);
        a.set_configured(20);
        assert_eq!(a.limit(t0), 20);
    }
}
