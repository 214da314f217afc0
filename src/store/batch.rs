//! All-or-nothing batches. A batch's messages are written one by one (sled's own atomic batch
//! takes a database-wide lock for its whole length, stalling every other reader and writer),
//! so a crash between the first write and the answer could leave part of an unanswered batch
//! stored, and sent. Instead, the ids of the batch are recorded first, in a small tree of
//! unfinished batches; the record goes once the batch is durable, and durably before the
//! answer. Opening the database takes back every batch still recorded there.
//!
//! sled recovers a prefix of its log, so a message of the batch that survived a crash implies
//! that the record of its batch (written before it) survived too.

use super::{Store, StoreError};

/// Ids per record, keeping each record a few KiB: sled writes large values to files of their
/// own that it never fsyncs.
const IDS_PER_RECORD: usize = 512;

pub(super) const TREE: &str = "unfinished_batches";

/// The records of one unfinished batch, to be removed by [`Store::end_batch`].
#[derive(Debug)]
pub struct BatchMark {
    keys: Vec<[u8; 12]>,
}

impl Store {
    /// Records `ids` as one unfinished batch. Write the messages after this returns; once
    /// they are committed, call [`Store::end_batch`] and commit again before answering.
    pub fn begin_batch(&self, ids: &[u64]) -> Result<BatchMark, StoreError> {
        self.with(|inner| {
            let batch = inner.db.generate_id()?;
            let mut keys = Vec::new();
            for (n, chunk) in ids.chunks(IDS_PER_RECORD).enumerate() {
                let mut key = [0u8; 12];
                key[..8].copy_from_slice(&batch.to_be_bytes());
                key[8..].copy_from_slice(&(n as u32).to_be_bytes());
                let value: Vec<u8> = chunk.iter().flat_map(|id| id.to_be_bytes()).collect();
                inner.unfinished_batches.insert(key, value)?;
                keys.push(key);
            }
            Ok(BatchMark { keys })
        })
    }

    /// The batch is durable: its messages stay whatever happens next. Not durable itself
    /// until the next commit.
    pub fn end_batch(&self, mark: BatchMark) -> Result<(), StoreError> {
        self.with(|inner| {
            for key in &mark.keys {
                inner.unfinished_batches.remove(key)?;
            }
            Ok(())
        })
    }

    /// Batches recorded but not finished (for tests and diagnostics).
    pub fn unfinished_batches(&self) -> Result<usize, StoreError> {
        self.with(|inner| Ok(inner.unfinished_batches.len()))
    }
}

/// Takes back the messages of every batch that was never answered; returns how many it removed.
/// Runs at every opening, before anything reads the messages.
pub(super) fn roll_back_unfinished(
    messages: &sled::Tree,
    unfinished_batches: &sled::Tree,
) -> Result<usize, StoreError> {
    let mut removed = 0;
    for record in unfinished_batches.iter() {
        let (key, ids) = record?;
        for id in ids.chunks_exact(8) {
            // The per-state counts are rebuilt afterwards, by `Store::recover`.
            if messages.remove(id)?.is_some() {
                removed += 1;
            }
        }
        unfinished_batches.remove(key)?;
    }
    if removed > 0 {
        tracing::warn!(
            messages = removed,
            "took back the messages of a batch that was interrupted before it was answered"
        );
    }
    Ok(removed)
}
