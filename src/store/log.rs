//! A durable FIFO of opaque entries in its own sled tree: received webhook payloads waiting to be
//! applied, payloads waiting to be relayed. Entries become durable with the next `Store::commit`.

use super::StoreError;

#[derive(Clone)]
pub struct DurableLog {
    pub(super) db: sled::Db,
    pub(super) tree: sled::Tree,
}

impl DurableLog {
    /// Appends an entry; returns its sequence number (increasing).
    pub fn push(&self, entry: &[u8]) -> Result<u64, StoreError> {
        let seq = self.db.generate_id()?;
        self.tree.insert(seq.to_be_bytes(), entry)?;
        Ok(seq)
    }

    /// Up to `limit` entries in order, starting after `after`.
    pub fn read(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let start = after.map(|a| a.saturating_add(1)).unwrap_or(0);
        let mut out = Vec::new();
        for item in self.tree.range(start.to_be_bytes()..).take(limit) {
            let (k, v) = item?;
            let seq = <[u8; 8]>::try_from(k.as_ref())
                .map(u64::from_be_bytes)
                .map_err(|_| StoreError::Corrupt("log key is not 8 bytes".into()))?;
            out.push((seq, v.to_vec()));
        }
        Ok(out)
    }

    pub fn remove(&self, seq: u64) -> Result<(), StoreError> {
        self.tree.remove(seq.to_be_bytes())?;
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.tree.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }
}
