//! When requests reach Meta, as far as the sender can tell: the departure gate's sliding window.
//!
//! A request is stamped when it is handed to the HTTP client. On a pooled connection its bytes
//! leave at once; on a new one they wait for the connection (TCP, and TLS against Meta: a few
//! round trips). At the start of a burst every request opens a connection until the first
//! answers come back, so those requests reach Meta later, relative to their stamps, than the
//! pooled ones a second later, and Meta's window can then hold more than the limit (seen against
//! the simulator: 1,001-1,005 arrivals in the sliding second that ends ~1.06 s into a 1,000 MPS
//! burst). A request that is likely to open a connection is therefore stamped
//! [`NEW_CONNECTION_ALLOWANCE`] later than it leaves.

use std::time::{Duration, Instant};

use super::rate::SlidingWindow;

/// How much later than its hand-over a request that opens a connection is counted as
/// leaving: a TCP and TLS handshake with Meta, with room to spare. Costs one shift of at most
/// this much when a burst's second second begins, once per rise in concurrency.
pub const NEW_CONNECTION_ALLOWANCE: Duration = Duration::from_millis(50);

/// After this long without a request the HTTP client's idle connections may be gone (it closes
/// them after 90 s); the estimate of open connections starts again from what is on the way.
const CONNECTIONS_FORGOTTEN: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct Departures {
    window: SlidingWindow,
    /// Requests handed to the HTTP client and not yet answered.
    on_the_way: usize,
    /// The most requests on the way at once lately: the connections the client keeps.
    connections: usize,
    last_departure: Option<Instant>,
}

impl Departures {
    pub fn new() -> Self {
        Self::default()
    }

    /// `None` if a request may leave now under `limit`, else when the next one may.
    pub fn next_slot(&mut self, now: Instant, limit: u32) -> Option<Instant> {
        self.window.next_slot(now, limit)
    }

    /// A request is handed to the HTTP client now; pair with [`Departures::answered`].
    /// Returns whether it was counted as opening a connection.
    pub fn leave(&mut self, now: Instant) -> bool {
        if self
            .last_departure
            .is_some_and(|t| now.saturating_duration_since(t) > CONNECTIONS_FORGOTTEN)
        {
            self.connections = self.on_the_way;
        }
        self.last_departure = Some(now);
        self.on_the_way += 1;
        let opens_connection = self.on_the_way > self.connections;
        if opens_connection {
            self.connections = self.on_the_way;
            self.window.record(now + NEW_CONNECTION_ALLOWANCE);
        } else {
            self.window.record(now);
        }
        opens_connection
    }

    /// Counts a request that left before a restart at `at` (no later than then): it is in
    /// Meta's window as much as one of this run's.
    pub fn seed(&mut self, at: Instant) {
        self.window.record(at);
    }

    /// The answer to a request that left has arrived (or it failed): its connection is free.
    pub fn answered(&mut self) {
        self.on_the_way = self.on_the_way.saturating_sub(1);
    }

    /// Requests counted as leaving in the last second.
    pub fn count_last_second(&mut self, now: Instant) -> u32 {
        self.window.count_last_second(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_requests_beyond_the_open_connections_are_stamped_late() {
        let t0 = Instant::now();
        let mut d = Departures::new();
        // A burst: three on the way at once, each a new connection.
        assert!(d.leave(t0));
        assert!(d.leave(t0 + Duration::from_millis(1)));
        assert!(d.leave(t0 + Duration::from_millis(2)));
        // Answers free the connections; the next three reuse them.
        for _ in 0..3 {
            d.answered();
        }
        assert!(!d.leave(t0 + Duration::from_millis(200)));
        assert!(!d.leave(t0 + Duration::from_millis(201)));
        assert!(!d.leave(t0 + Duration::from_millis(202)));
        // A fourth at once needs a fourth connection.
        assert!(d.leave(t0 + Duration::from_millis(203)));
    }

    #[test]
    fn a_late_stamp_holds_the_next_second_back_by_the_allowance() {
        let t0 = Instant::now();
        let mut d = Departures::new();
        assert!(d.leave(t0));
        d.answered();
        assert!(!d.leave(t0 + Duration::from_millis(500)));
        // Limit 2: the third may leave once the first stamp (t0 + allowance) is a window old.
        let slot = d.next_slot(t0 + Duration::from_millis(600), 2);
        assert_eq!(
            slot,
            Some(t0 + NEW_CONNECTION_ALLOWANCE + super::super::rate::WINDOW)
        );
    }

    #[test]
    fn connections_are_forgotten_after_a_long_idle() {
        let t0 = Instant::now();
        let mut d = Departures::new();
        assert!(d.leave(t0));
        d.answered();
        assert!(!d.leave(t0 + Duration::from_secs(1)));
        d.answered();
        assert!(d.leave(t0 + Duration::from_secs(1) + CONNECTIONS_FORGOTTEN * 2));
    }
}
