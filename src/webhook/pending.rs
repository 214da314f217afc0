//! Statuses that arrived before waq could apply them: the wamid is not recorded yet (the
//! dispatcher stores it right after Meta's answer, and Meta's `sent` webhook can beat it), or
//! the message is still `sending`. They wait here, bounded, and are retried for `WAIT`. Each
//! is also kept in a durable log until it is settled, so that a crash does not lose a status
//! that Meta was already answered 200 for.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::payload::Status;

/// How long a status waits for its wamid before it is counted as unknown.
pub const WAIT: Duration = Duration::from_secs(30);
/// Statuses held at most; beyond that the oldest is given up.
pub const CAPACITY: usize = 10_000;

/// A status to apply later, with what is needed to route it and to write it back to the inbox.
#[derive(Debug, Clone)]
pub struct PendingStatus {
    pub sender: String,
    pub phone_number_id: String,
    pub status: Status,
    /// The status object as Meta sent it.
    pub raw: serde_json::Value,
    /// Its entry in the durable log of waiting statuses, once written there.
    pub durable: Option<u64>,
}

#[derive(Debug)]
pub struct Waiting {
    pub give_up_at: Instant,
    pub status: PendingStatus,
}

#[derive(Debug, Default)]
pub struct Pending {
    items: VecDeque<Waiting>,
}

impl Pending {
    /// Queues a status; returns the statuses given up to stay within `CAPACITY`.
    pub fn add(&mut self, status: PendingStatus, now: Instant) -> Vec<PendingStatus> {
        self.items.push_back(Waiting {
            give_up_at: now + WAIT,
            status,
        });
        self.trim()
    }

    /// Everything waiting, oldest first; the caller puts back what is still unknown.
    pub fn take_all(&mut self) -> Vec<Waiting> {
        self.items.drain(..).collect()
    }

    /// Returns retried statuses ahead of those added meanwhile (they are older).
    pub fn put_back(&mut self, older: Vec<Waiting>) -> Vec<PendingStatus> {
        for w in older.into_iter().rev() {
            self.items.push_front(w);
        }
        self.trim()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    fn trim(&mut self) -> Vec<PendingStatus> {
        let mut dropped = Vec::new();
        while self.items.len() > CAPACITY {
            if let Some(w) = self.items.pop_front() {
                dropped.push(w.status);
            }
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(n: usize) -> PendingStatus {
        let raw = serde_json::json!({"id": format!("wamid.{n}"), "status": "sent"});
        PendingStatus {
            sender: "main".into(),
            phone_number_id: "1".into(),
            status: Status::parse(&raw).unwrap(),
            raw,
            durable: None,
        }
    }

    #[test]
    fn bounded_oldest_dropped_and_order_kept() {
        let now = Instant::now();
        let mut p = Pending::default();
        for n in 0..CAPACITY {
            assert!(p.add(st(n), now).is_empty());
        }
        let dropped = p.add(st(CAPACITY), now);
        assert_eq!(dropped.len(), 1);
        assert_eq!(dropped[0].status.id, "wamid.0");

        let taken = p.take_all();
        assert_eq!(p.len(), 0);
        assert_eq!(taken[0].give_up_at, now + WAIT);
        p.add(st(99_999), now);
        let dropped = p.put_back(taken);
        assert_eq!(dropped.len(), 1);
        assert_eq!(dropped[0].status.id, "wamid.1");
        assert_eq!(p.len(), CAPACITY);
        let all = p.take_all();
        assert_eq!(all[0].status.status.id, "wamid.2");
        assert_eq!(all.last().unwrap().status.status.id, "wamid.99999");
    }
}
