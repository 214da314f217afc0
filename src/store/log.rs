//! A durable FIFO of opaque entries in its own sled tree: received webhook payloads waiting to be
//! applied, payloads waiting to be relayed. Entries become durable with the next `Store::commit`.

use super::{Store, StoreError};

/// Holds the store, not sled handles: the store may reopen its database after an I/O failure,
/// and a sled handle kept here would hold the old one open.
#[derive(Clone)]
pub struct DurableLog {
    pub(super) store: Store,
    pub(super) tree: String,
}

impl DurableLog {
    /// Appends an entry; returns its sequence number (increasing).
    pub fn push(&self, entry: &[u8]) -> Result<u64, StoreError> {
        self.store.with(|inner| {
            let tree = inner.db.open_tree(&self.tree)?;
            let seq = inner.db.generate_id()?;
            tree.insert(seq.to_be_bytes(), entry)?;
            Ok(seq)
        })
    }

    /// Up to `limit` entries in order, starting after `after`.
    pub fn read(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let start = after.map(|a| a.saturating_add(1)).unwrap_or(0);
        self.store.with(|inner| {
            let tree = inner.db.open_tree(&self.tree)?;
            let mut out = Vec::new();
            for item in tree.range(start.to_be_bytes()..).take(limit) {
                let (k, v) = item?;
                let seq = <[u8; 8]>::try_from(k.as_ref())
                    .map(u64::from_be_bytes)
                    .map_err(|_| StoreError::Corrupt("log key is not 8 bytes".into()))?;
                out.push((seq, v.to_vec()));
            }
            Ok(out)
        })
    }

    pub fn remove(&self, seq: u64) -> Result<(), StoreError> {
        self.store.with(|inner| {
            inner.db.open_tree(&self.tree)?.remove(seq.to_be_bytes())?;
            Ok(())
        })
    }

    /// 0 while the store is reopening.
    pub fn len(&self) -> usize {
        self.store
            .with(|inner| Ok(inner.db.open_tree(&self.tree)?.len()))
            .unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.store
            .with(|inner| Ok(inner.db.open_tree(&self.tree)?.is_empty()))
            .unwrap_or(true)
    }
}
