//! Users reached outside a customer-service window, for Meta's messaging limit.
//!
//! Tree `reached`: `portfolio \0 digits` → when a message last went to that user while its
//! window was closed (Unix ms, big-endian). The dispatcher counts a portfolio's entries of the
//! last 24 hours against its limit (`dispatch/messaging_limit.rs`); older entries are removed
//! when a portfolio's count is loaded.

use super::{id_from_bytes, idempotency_key, Store, StoreError};

pub(super) const TREE: &str = "reached";

impl Store {
    /// Records that `to` was reached by `portfolio` at `at_ms` (later than any earlier time).
    pub fn record_reached(&self, portfolio: &str, to: &str, at_ms: u64) -> Result<(), StoreError> {
        self.with(|inner| {
            inner
                .reached
                .update_and_fetch(idempotency_key(portfolio, to), |old| {
                    let prev = old.and_then(id_from_bytes).unwrap_or(0);
                    Some(prev.max(at_ms).to_be_bytes().to_vec())
                })?;
            Ok(())
        })
    }

    /// Takes back the reach of `to` recorded at `at_ms` (its request did not reach the user);
    /// an entry another send has moved on is kept.
    pub fn forget_reached(&self, portfolio: &str, to: &str, at_ms: u64) -> Result<(), StoreError> {
        self.with(|inner| {
            let key = idempotency_key(portfolio, to);
            let _ = inner.reached.compare_and_swap(
                key,
                Some(&at_ms.to_be_bytes()[..]),
                None::<sled::IVec>,
            )?;
            Ok(())
        })
    }

    /// The users `portfolio` reached at or after `since_ms`, with when; removes its older
    /// entries (durable with the next commit; a removal lost to a crash is only done again).
    pub fn reached_since(
        &self,
        portfolio: &str,
        since_ms: u64,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        self.with(|inner| {
            let prefix = idempotency_key(portfolio, "");
            let mut recent = Vec::new();
            for entry in inner.reached.scan_prefix(&prefix) {
                let (key, value) = entry?;
                let at = id_from_bytes(&value).unwrap_or(0);
                if at >= since_ms {
                    let to = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
                    recent.push((to, at));
                } else {
                    let _ =
                        inner
                            .reached
                            .compare_and_swap(&key, Some(&value), None::<sled::IVec>)?;
                }
            }
            Ok(recent)
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::store::Store;

    #[test]
    fn reached_users_are_kept_per_portfolio_and_pruned_by_age() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_for_test(dir.path());
        store.record_reached("acme", "15550001", 1_000).unwrap();
        store.record_reached("acme", "15550002", 5_000).unwrap();
        // A later reach moves the time on; an earlier one does not move it back.
        store.record_reached("acme", "15550002", 6_000).unwrap();
        store.record_reached("acme", "15550002", 2_000).unwrap();
        store.record_reached("acme-eu", "15550001", 9_000).unwrap();
        let mut acme = store.reached_since("acme", 0).unwrap();
        acme.sort();
        assert_eq!(
            acme,
            [("15550001".into(), 1_000), ("15550002".into(), 6_000)]
        );
        // A take-back of a time that has moved on leaves the entry.
        store.forget_reached("acme", "15550002", 5_000).unwrap();
        store.forget_reached("acme", "15550001", 1_000).unwrap();
        assert_eq!(
            store.reached_since("acme", 0).unwrap(),
            [("15550002".into(), 6_000)]
        );
        // Older entries are pruned on the way; the other portfolio is untouched.
        assert!(store.reached_since("acme", 7_000).unwrap().is_empty());
        assert!(store.reached_since("acme", 0).unwrap().is_empty());
        assert_eq!(
            store.reached_since("acme-eu", 0).unwrap(),
            [("15550001".into(), 9_000)]
        );
    }

    #[tokio::test]
    async fn reached_users_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open_for_test(dir.path());
            store.record_reached("main", "15550001", 1_000).unwrap();
            store.commit().await.unwrap();
        }
        let store = Store::open_for_test(dir.path());
        assert_eq!(
            store.reached_since("main", 0).unwrap(),
            [("15550001".into(), 1_000)]
        );
    }
}
