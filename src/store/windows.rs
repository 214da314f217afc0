//! Customer-service windows: when each recipient last wrote to each sender.
//!
//! Tree `windows`: `sender \0 digits` → the last inbound time (Unix ms, big-endian). A window
//! is open for 24 hours after that; entries older than the retention period are pruned, a
//! slice of the tree at a time, so the tree holds the recipients of the recent past only.

use std::ops::Bound;

use super::{id_from_bytes, wa_ids, window_key, Inner, Store, StoreError};

/// What one pruning pass did, and where the next one starts (`None`: at the beginning).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct WindowsPruned {
    pub removed: u64,
    pub next: Option<Vec<u8>>,
}

impl Store {
    /// When `to` last wrote to `sender` (Unix ms), if ever.
    pub fn last_inbound(&self, sender: &str, to: &str) -> Result<Option<u64>, StoreError> {
        self.with(|inner| window_time(inner, sender, to))
    }

    /// Records an inbound message from `from` at `at_ms`, for `from` and for every number
    /// dialled to reach it when `from` is a wa_id with aliases (see `learn_wa_id`); never
    /// moves a window backwards. Returns the effective last-inbound time of `from`.
    pub fn record_inbound(&self, sender: &str, from: &str, at_ms: u64) -> Result<u64, StoreError> {
        self.with(|inner| {
            let effective = raise_window(inner, sender, from, at_ms)?;
            for dialled in wa_ids::aliases(inner, sender, from)? {
                if dialled != from {
                    raise_window(inner, sender, &dialled, at_ms)?;
                }
            }
            Ok(effective)
        })
    }

    /// Meta said the window was closed when a message sent at `sent_at_ms` arrived (131047):
    /// forgets the window of `to`, and of the numbers aliased to it when it is a wa_id, unless
    /// the user wrote again after that send. Returns whether it forgot any.
    pub fn close_window(
        &self,
        sender: &str,
        to: &str,
        sent_at_ms: u64,
    ) -> Result<bool, StoreError> {
        self.with(|inner| {
            let mut closed = forget_window(inner, sender, to, sent_at_ms)?;
            for dialled in wa_ids::aliases(inner, sender, to)? {
                if dialled != to {
                    closed |= forget_window(inner, sender, &dialled, sent_at_ms)?;
                }
            }
            Ok(closed)
        })
    }

    /// Forgets the windows whose recipient last wrote before `before_ms`, looking at up to
    /// `limit` entries after `after` (from the start when `None`). An entry that a new inbound
    /// message raised meanwhile is kept. Durable with the next `commit()`; a removal lost to a
    /// crash is only done again.
    pub fn prune_windows(
        &self,
        before_ms: u64,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<WindowsPruned, StoreError> {
        self.with(|inner| {
            let start = after.map_or(Bound::Unbounded, Bound::Excluded);
            let mut pruned = WindowsPruned::default();
            let mut seen = 0;
            for entry in inner.windows.range::<&[u8], _>((start, Bound::Unbounded)) {
                let (key, value) = entry?;
                if id_from_bytes(&value).is_some_and(|at| at < before_ms) {
                    let swapped =
                        inner
                            .windows
                            .compare_and_swap(&key, Some(&value), None::<sled::IVec>)?;
                    pruned.removed += u64::from(swapped.is_ok());
                }
                seen += 1;
                if seen == limit {
                    pruned.next = Some(key.to_vec());
                    break;
                }
            }
            Ok(pruned)
        })
    }
}

pub(super) fn window_time(
    inner: &Inner,
    sender: &str,
    to: &str,
) -> Result<Option<u64>, StoreError> {
    Ok(inner
        .windows
        .get(window_key(sender, to))?
        .and_then(|v| id_from_bytes(&v)))
}

/// Sets the last inbound time of `to` to `at_ms` unless it is later already; returns it.
pub(super) fn raise_window(
    inner: &Inner,
    sender: &str,
    to: &str,
    at_ms: u64,
) -> Result<u64, StoreError> {
    let updated = inner
        .windows
        .update_and_fetch(window_key(sender, to), |old| {
            let prev = old.and_then(id_from_bytes).unwrap_or(0);
            Some(prev.max(at_ms).to_be_bytes().to_vec())
        })?;
    Ok(updated.and_then(|v| id_from_bytes(&v)).unwrap_or(at_ms))
}

/// Removes the window of `to` unless the user wrote after `sent_at_ms`; returns whether it did.
fn forget_window(
    inner: &Inner,
    sender: &str,
    to: &str,
    sent_at_ms: u64,
) -> Result<bool, StoreError> {
    let mut closed = false;
    inner
        .windows
        .update_and_fetch(window_key(sender, to), |old| {
            // sled may run this again after a lost race: decide afresh each time.
            closed = false;
            let prev = old.and_then(id_from_bytes)?;
            if prev <= sent_at_ms {
                closed = true;
                None
            } else {
                Some(prev.to_be_bytes().to_vec())
            }
        })?;
    Ok(closed)
}
