//! The daemon-wide budget of request bodies held in memory (`socket.max_body_memory_bytes`).
//!
//! A body larger than [`SMALL_BODY`] waits for room before it is read: by its `Content-Length`,
//! or by its cap while a chunked body arrives (the unused part is given back once it ended).
//! The room is held until the handler is done with the body. A body never needs more than the
//! whole budget (one that would is charged the whole budget), so every wait ends once the
//! bodies ahead of it are handled. The semaphore is fair: a large body first in line is not
//! passed over by later ones.
//!
//! Small bodies are not counted: a single send (32 KiB at most by default) never waits behind
//! batches, and the hot path takes no lock. They are bounded by the connections, as hyper's
//! read buffer is: at most `socket.max_connections` × 64 KiB at once.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// While a batch is handled, its body, parsed items, messages and their writes hold several
/// times its size: measured, about 5× for 10,000 valid sends (some of it the store's buffers,
/// which outlive the request), 1.5× for items all refused (docs/RELIABILITY.md).
pub const BATCH_FACTOR: u64 = 4;
/// Bodies up to this size are not counted against the budget.
pub const SMALL_BODY: u64 = 64 * 1024;
/// The budget's unit: a semaphore takes at most `u32::MAX` permits at once.
const UNIT: u64 = 1024;

pub struct BodyBudget {
    room: Arc<Semaphore>,
    /// The whole budget, in units.
    units: u64,
    /// Bytes counted now: what the bodies holding room have received, times their kind's
    /// factor. Counted as the bytes arrive, apart from the room, which bounds it.
    held: AtomicU64,
    /// The most `held` has been since the start.
    peak: AtomicU64,
    /// Requests waiting for room.
    waiting: AtomicU64,
}

impl BodyBudget {
    pub fn new(bytes: usize) -> Arc<BodyBudget> {
        let units = (bytes as u64 / UNIT).clamp(1, Semaphore::MAX_PERMITS as u64);
        Arc::new(BodyBudget {
            room: Arc::new(Semaphore::new(units as usize)),
            units,
            held: AtomicU64::new(0),
            peak: AtomicU64::new(0),
            waiting: AtomicU64::new(0),
        })
    }

    /// Room for a body of at most `bytes`, that holds `factor` times its size while handled;
    /// waits for it unless the body is small.
    pub async fn reserve(self: &Arc<Self>, bytes: u64, factor: u64) -> Reserved {
        if bytes <= SMALL_BODY {
            return Reserved::default();
        }
        let wanted = self.units_for(bytes.saturating_mul(factor));
        let permit = match self.room.clone().try_acquire_many_owned(wanted) {
            Ok(p) => p,
            Err(_) => {
                self.waiting.fetch_add(1, Relaxed);
                let p = self.room.clone().acquire_many_owned(wanted).await;
                self.waiting.fetch_sub(1, Relaxed);
                match p {
                    Ok(p) => p,
                    // The semaphore is never closed; uncounted rather than a refusal.
                    Err(_) => return Reserved::default(),
                }
            }
        };
        Reserved {
            room: Some(Room {
                budget: self.clone(),
                permit,
                factor,
                counted: 0,
            }),
        }
    }

    fn units_for(&self, bytes: u64) -> u32 {
        bytes
            .div_ceil(UNIT)
            .clamp(1, self.units)
            .try_into()
            .unwrap_or(u32::MAX)
    }

    /// Bytes counted now.
    pub fn held(&self) -> u64 {
        self.held.load(Relaxed)
    }

    /// The most bytes counted at once since the start.
    pub fn peak(&self) -> u64 {
        self.peak.load(Relaxed)
    }

    /// Requests waiting for room.
    pub fn waiting(&self) -> u64 {
        self.waiting.load(Relaxed)
    }
}

/// A body's room in the budget (none for a small body), given back when dropped.
#[derive(Default)]
pub struct Reserved {
    room: Option<Room>,
}

struct Room {
    budget: Arc<BodyBudget>,
    permit: OwnedSemaphorePermit,
    factor: u64,
    counted: u64,
}

impl Reserved {
    /// `n` more bytes of the body arrived.
    pub fn count(&mut self, n: usize) {
        if let Some(r) = &mut self.room {
            let n = (n as u64).saturating_mul(r.factor);
            r.counted += n;
            let now = r.budget.held.fetch_add(n, Relaxed) + n;
            r.budget.peak.fetch_max(now, Relaxed);
        }
    }

    /// The body ended at `len` bytes: room reserved beyond what it holds goes back.
    pub fn fit(&mut self, len: usize) {
        if let Some(r) = &mut self.room {
            let keep = r
                .budget
                .units_for((len as u64).saturating_mul(r.factor))
                .max(1) as usize;
            if r.permit.num_permits() > keep {
                let extra = r.permit.num_permits() - keep;
                drop(r.permit.split(extra));
            }
        }
    }
}

impl Drop for Room {
    fn drop(&mut self) {
        self.budget.held.fetch_sub(self.counted, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_body_waits_for_room_and_gets_it_when_one_ends() {
        let budget = BodyBudget::new(4 << 20);
        let mut first = budget.reserve(3 << 20, 1).await;
        first.count(3 << 20);
        assert_eq!(budget.held(), 3 << 20);
        // 2 MiB more does not fit until the first is done.
        let waiter = {
            let budget = budget.clone();
            tokio::spawn(async move { budget.reserve(2 << 20, 1).await })
        };
        while budget.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        assert!(!waiter.is_finished());
        drop(first);
        let mut second = waiter.await.unwrap();
        second.count(2 << 20);
        assert_eq!(budget.held(), 2 << 20);
        assert_eq!(budget.peak(), 3 << 20);
        drop(second);
        assert_eq!(budget.held(), 0);
    }

    #[tokio::test]
    async fn a_body_over_the_whole_budget_takes_all_of_it_rather_than_wait_forever() {
        let budget = BodyBudget::new(1 << 20);
        let all = budget.reserve(8 << 20, 2).await;
        assert!(budget.room.available_permits() == 0);
        drop(all);
        assert_eq!(budget.room.available_permits() as u64, budget.units);
    }

    #[tokio::test]
    async fn small_bodies_are_not_counted_and_unused_room_goes_back() {
        let budget = BodyBudget::new(1 << 20);
        let mut small = budget.reserve(SMALL_BODY, 1).await;
        small.count(SMALL_BODY as usize);
        assert_eq!(budget.held(), 0);
        assert_eq!(budget.room.available_permits(), 1024);
        // A chunked body reserves its cap, and keeps what it holds once it ended.
        let mut chunked = budget.reserve(1 << 20, 1).await;
        assert_eq!(budget.room.available_permits(), 0);
        chunked.count(100 * 1024);
        chunked.fit(100 * 1024);
        assert_eq!(budget.room.available_permits(), 1024 - 100);
        drop(chunked);
        assert_eq!(budget.room.available_permits(), 1024);
    }
}
