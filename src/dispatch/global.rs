//! The optional cap across all senders, `dispatch.global_mps`: the same sliding-window log as
//! a sender's departure gate, checked and stamped when a request leaves, so no sliding window
//! holds more than the cap. A token bucket checked when a message is picked could not promise
//! that: the pick and the departure are apart by the sender's own pacing.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::rate::SlidingWindow;

#[derive(Default)]
pub struct GlobalGate {
    /// 0: no cap, and nothing is recorded (no lock taken per request). A cap set by a reload
    /// counts departures from then on.
    limit: AtomicU32,
    window: Mutex<SlidingWindow>,
}

impl GlobalGate {
    pub fn new(limit: Option<u32>) -> GlobalGate {
        let gate = GlobalGate::default();
        gate.set_limit(limit);
        gate
    }

    /// A reload's `global_mps`: in force for the next departure.
    pub fn set_limit(&self, limit: Option<u32>) {
        self.limit.store(limit.unwrap_or(0), Relaxed);
    }

    /// How long until a request may leave under the cap (`None`: now), without taking the slot.
    pub fn wait(&self, now: Instant) -> Option<Duration> {
        let limit = self.limit.load(Relaxed);
        if limit == 0 {
            return None;
        }
        let next = self.window().next_slot(now, limit);
        next.map(|at| until(at, now))
    }

    /// Takes a slot for a request leaving now if the cap has one (`None`), else says how long
    /// until it does.
    pub fn leave(&self, now: Instant) -> Option<Duration> {
        let limit = self.limit.load(Relaxed);
        if limit == 0 {
            return None;
        }
        let mut window = self.window();
        match window.next_slot(now, limit) {
            Some(at) => Some(until(at, now)),
            None => {
                window.record(now);
                None
            }
        }
    }

    /// Counts a request that left before a restart at `at`: it is in Meta's window as much as
    /// one of this run's.
    pub fn seed(&self, at: Instant) {
        if self.limit.load(Relaxed) != 0 {
            self.window().record(at);
        }
    }

    fn window(&self) -> MutexGuard<'_, SlidingWindow> {
        self.window.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A wait of at least a millisecond: a timer of zero would spin.
fn until(at: Instant, now: Instant) -> Duration {
    at.saturating_duration_since(now)
        .max(Duration::from_millis(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::rate::WINDOW;

    #[test]
    fn no_window_holds_more_than_the_cap() {
        let gate = GlobalGate::new(Some(2));
        let t0 = Instant::now();
        assert_eq!(gate.leave(t0), None);
        assert_eq!(gate.wait(t0 + Duration::from_millis(400)), None);
        assert_eq!(gate.leave(t0 + Duration::from_millis(500)), None);
        // A third within the window waits for the first to leave it.
        let at = t0 + Duration::from_millis(999);
        assert_eq!(gate.wait(at), Some(WINDOW - Duration::from_millis(999)));
        assert_eq!(gate.leave(at), Some(WINDOW - Duration::from_millis(999)));
        assert_eq!(gate.leave(t0 + WINDOW), None);
    }

    #[test]
    fn requests_from_before_a_restart_count() {
        let gate = GlobalGate::new(Some(2));
        let t0 = Instant::now();
        gate.seed(t0);
        gate.seed(t0 + Duration::from_millis(100));
        assert!(gate.leave(t0 + Duration::from_millis(200)).is_some());
    }

    #[test]
    fn a_reload_sets_raises_and_lifts_the_cap() {
        let gate = GlobalGate::new(None);
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        for i in 0..5 {
            assert_eq!(gate.leave(ms(i)), None);
        }
        // Capped by a reload: counted from then on.
        gate.set_limit(Some(3));
        for i in 10..13 {
            assert_eq!(gate.leave(ms(i)), None);
        }
        assert!(gate.leave(ms(13)).is_some());
        // Raised: room again at once.
        gate.set_limit(Some(4));
        assert_eq!(gate.leave(ms(14)), None);
        // Lifted.
        gate.set_limit(None);
        gate.seed(ms(15));
        assert_eq!(gate.wait(ms(15)), None);
        assert_eq!(gate.leave(ms(15)), None);
    }
}
