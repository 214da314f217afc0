//! Durable storage on sled: message records, idempotency keys, recipient windows and the
//! wamid → id map. sled stays inside this module; callers see `Message` and `StoreError`.
//!
//! Invariant: `commit()` returns only after everything written before it is fsync'd.

pub mod codec;
mod commit;
mod log;
mod recovery;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use crate::config::StoreConfig;
use crate::model::{Message, State};

pub use codec::RECORD_VERSION;
pub use commit::CommitStats;
pub use log::DurableLog;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// No space left (or the file size limit reached): retry when space is freed.
    #[error("the disk is full: {0}")]
    Full(String),
    #[error("storage is unavailable: {0}")]
    Unavailable(String),
    #[error("a stored record is corrupt: {0}")]
    Corrupt(String),
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        match e.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EFBIG) | Some(libc::EDQUOT) => {
                StoreError::Full(e.to_string())
            }
            _ => StoreError::Unavailable(e.to_string()),
        }
    }
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        match e {
            sled::Error::Io(io) => StoreError::from(io),
            sled::Error::Corruption { .. } => StoreError::Corrupt(e.to_string()),
            other => StoreError::Unavailable(other.to_string()),
        }
    }
}

impl From<StoreError> for crate::error::ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Full(_) => crate::error::ApiError::new(
                507,
                "disk_full",
                format!("{e}; nothing was stored: free disk space and retry"),
            ),
            _ => crate::error::ApiError::new(
                503,
                "storage_unavailable",
                format!("{e}; nothing was stored: retry later"),
            ),
        }
    }
}

/// Result of writing a new message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    Created,
    /// The idempotency key belongs to this earlier message; nothing was written.
    Duplicate(u64),
}

/// Striped locks serialise read-modify-write of one record without a lock per message.
const STRIPES: usize = 64;

#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    dir: PathBuf,
    messages: sled::Tree,
    idempotency: sled::Tree,
    windows: sled::Tree,
    wamids: sled::Tree,
    committer: commit::Committer,
    commit_stats: Arc<CommitStats>,
    stripes: Vec<Mutex<()>>,
    counts: [AtomicI64; State::ALL.len()],
}

fn state_index(s: State) -> usize {
    State::ALL.iter().position(|x| *x == s).unwrap_or(0)
}

impl Store {
    /// Opens (or creates) the database in `dir`. Call `recover` next to rebuild counts and
    /// hand pending messages to the dispatcher.
    pub fn open(dir: &Path, cfg: &StoreConfig) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir)?;
        let db = recovery::open_sled(dir, cfg)?;
        let messages = db.open_tree("messages")?;
        let idempotency = db.open_tree("idempotency")?;
        let windows = db.open_tree("windows")?;
        let wamids = db.open_tree("wamids")?;
        db.flush()?;
        // New files must be reachable after power loss: fsync the directory entries once.
        fsync_dir(dir)?;
        let mut files = Vec::new();
        let data_file = dir.join("db");
        if data_file.exists() {
            files.push(File::open(&data_file)?);
        }
        let commit_stats = Arc::new(CommitStats::default());
        let committer = commit::Committer::start(db.clone(), files, commit_stats.clone())?;
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                dir: dir.to_path_buf(),
                messages,
                idempotency,
                windows,
                wamids,
                committer,
                commit_stats,
                stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
                counts: Default::default(),
            }),
        })
    }

    /// Scans every record once: rebuilds the per-state counts and calls `pending` for each
    /// message the dispatcher still owns. Nothing lives only in memory, so this is all a restart needs.
    pub fn recover(&self, mut pending: impl FnMut(Message)) -> Result<u64, StoreError> {
        for c in &self.inner.counts {
            c.store(0, Relaxed);
        }
        let mut n = 0;
        for item in self.inner.messages.iter() {
            let (_, v) = item?;
            let m: Message = codec::decode(&v)?;
            self.inner.counts[state_index(m.state)].fetch_add(1, Relaxed);
            n += 1;
            if m.state.is_pending() {
                pending(m);
            }
        }
        Ok(n)
    }

    /// A new message id, monotonic across restarts (so ids sort by enqueue order).
    pub fn next_id(&self) -> Result<u64, StoreError> {
        // sled's ids start at 0; keep 0 unused so it can mean "none" in cursors.
        Ok(self.inner.db.generate_id()? + 1)
    }

    /// Writes a new message. Not durable until `commit()` returns.
    pub fn insert_new(&self, m: &Message) -> Result<Insert, StoreError> {
        if let Some(key) = &m.idempotency_key {
            let idem_key = idempotency_key(&m.sender, key);
            let id_bytes = m.id.to_be_bytes();
            loop {
                match self.inner.idempotency.compare_and_swap(
                    &idem_key,
                    None as Option<&[u8]>,
                    Some(&id_bytes[..]),
                )? {
                    Ok(()) => break,
                    Err(cas) => {
                        let existing = cas.current.as_deref().and_then(id_from_bytes);
                        match existing {
                            // A key left behind by a crash before its message was written counts as free.
                            Some(id) if self.inner.messages.contains_key(id.to_be_bytes())? => {
                                return Ok(Insert::Duplicate(id))
                            }
                            _ => {
                                let _ = self.inner.idempotency.compare_and_swap(
                                    &idem_key,
                                    cas.current,
                                    None as Option<&[u8]>,
                                )?;
                            }
                        }
                    }
                }
            }
        }
        self.inner
            .messages
            .insert(m.id.to_be_bytes(), codec::encode(m)?)?;
        self.inner.counts[state_index(m.state)].fetch_add(1, Relaxed);
        Ok(Insert::Created)
    }

    /// Waits until everything written so far is on disk (shared flush + fsync).
    pub async fn commit(&self) -> Result<(), StoreError> {
        self.inner.committer.commit().await
    }

    pub fn get(&self, id: u64) -> Result<Option<Message>, StoreError> {
        match self.inner.messages.get(id.to_be_bytes())? {
            Some(v) => Ok(Some(codec::decode(&v)?)),
            None => Ok(None),
        }
    }

    /// Read-modify-write of one message under its lock. `f` returns `None` to leave the record
    /// unchanged. Returns `Ok(None)` for an unknown id too.
    pub fn update<R>(
        &self,
        id: u64,
        f: impl FnOnce(&mut Message) -> Option<R>,
    ) -> Result<Option<(R, Message)>, StoreError> {
        let _guard = self.inner.stripes[(id as usize) % STRIPES]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let Some(mut m) = self.get(id)? else {
            return Ok(None);
        };
        let before = m.state;
        let Some(r) = f(&mut m) else {
            return Ok(None);
        };
        self.inner
            .messages
            .insert(id.to_be_bytes(), codec::encode(&m)?)?;
        if before != m.state {
            self.inner.counts[state_index(before)].fetch_sub(1, Relaxed);
            self.inner.counts[state_index(m.state)].fetch_add(1, Relaxed);
        }
        Ok(Some((r, m)))
    }

    /// Deletes a message and its idempotency key and wamid (retention).
    pub fn remove(&self, m: &Message) -> Result<(), StoreError> {
        let _guard = self.inner.stripes[(m.id as usize) % STRIPES]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if self.inner.messages.remove(m.id.to_be_bytes())?.is_some() {
            self.inner.counts[state_index(m.state)].fetch_sub(1, Relaxed);
        }
        if let Some(key) = &m.idempotency_key {
            let idem_key = idempotency_key(&m.sender, key);
            let _ = self.inner.idempotency.compare_and_swap(
                idem_key,
                Some(&m.id.to_be_bytes()[..]),
                None as Option<&[u8]>,
            )?;
        }
        if let Some(w) = &m.wamid {
            self.inner.wamids.remove(w.as_bytes())?;
        }
        Ok(())
    }

    /// Messages in id order, starting after `after` (a cursor).
    pub fn scan(
        &self,
        after: Option<u64>,
    ) -> impl Iterator<Item = Result<Message, StoreError>> + '_ {
        let start = after.map(|a| a.saturating_add(1)).unwrap_or(0);
        self.inner
            .messages
            .range(start.to_be_bytes()..)
            .map(|item| {
                item.map_err(StoreError::from)
                    .and_then(|(_, v)| codec::decode(&v))
            })
    }

    pub fn set_wamid(&self, wamid: &str, id: u64) -> Result<(), StoreError> {
        self.inner
            .wamids
            .insert(wamid.as_bytes(), &id.to_be_bytes()[..])?;
        Ok(())
    }

    pub fn lookup_wamid(&self, wamid: &str) -> Result<Option<u64>, StoreError> {
        Ok(self
            .inner
            .wamids
            .get(wamid.as_bytes())?
            .and_then(|v| id_from_bytes(&v)))
    }

    /// When `to` last wrote to `sender` (Unix ms), if ever.
    pub fn last_inbound(&self, sender: &str, to: &str) -> Result<Option<u64>, StoreError> {
        Ok(self
            .inner
            .windows
            .get(window_key(sender, to))?
            .and_then(|v| id_from_bytes(&v)))
    }

    /// Records an inbound message at `at_ms`; never moves the window backwards. Returns the
    /// effective last-inbound time.
    pub fn record_inbound(&self, sender: &str, to: &str, at_ms: u64) -> Result<u64, StoreError> {
        let updated = self
            .inner
            .windows
            .update_and_fetch(window_key(sender, to), |old| {
                let prev = old.and_then(id_from_bytes).unwrap_or(0);
                Some(prev.max(at_ms).to_be_bytes().to_vec())
            })?;
        Ok(updated.and_then(|v| id_from_bytes(&v)).unwrap_or(at_ms))
    }

    /// Counts of messages per state, in `State::ALL` order.
    pub fn counts(&self) -> Vec<(State, u64)> {
        State::ALL
            .iter()
            .map(|s| {
                (
                    *s,
                    self.inner.counts[state_index(*s)].load(Relaxed).max(0) as u64,
                )
            })
            .collect()
    }

    /// A named durable FIFO (see `DurableLog`), e.g. `webhook_inbox` or `relay`.
    pub fn log(&self, name: &str) -> Result<DurableLog, StoreError> {
        Ok(DurableLog {
            db: self.inner.db.clone(),
            tree: self.inner.db.open_tree(format!("log:{name}"))?,
        })
    }

    pub fn commit_stats(&self) -> &CommitStats {
        &self.inner.commit_stats
    }

    /// Bytes the database occupies on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.inner.db.size_on_disk().unwrap_or(0)
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Flushes and fsyncs synchronously (shutdown).
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        self.inner.db.flush()?;
        let data_file = self.inner.dir.join("db");
        if data_file.exists() {
            File::open(&data_file)?.sync_data()?;
        }
        Ok(())
    }
}

fn idempotency_key(sender: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(sender.len() + 1 + key.len());
    k.extend_from_slice(sender.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

fn window_key(sender: &str, to: &str) -> Vec<u8> {
    idempotency_key(sender, to)
}

fn id_from_bytes(v: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(v).ok().map(u64::from_be_bytes)
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}
