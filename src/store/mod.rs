//! Durable storage on sled: message records, idempotency keys, recipient windows, the
//! wamid → id map and wa_id aliases. sled stays inside this module; callers see `Message` and `StoreError`.
//!
//! Invariant: `commit()` returns only after everything written before it is fsync'd.

mod batch;
pub mod codec;
mod commit;
mod log;
mod reached;
mod recovery;
mod scan;
mod wa_ids;
mod windows;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{
    AtomicBool, AtomicI64, AtomicU64,
    Ordering::{Relaxed, SeqCst},
};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use crate::config::StoreConfig;
use crate::model::{Message, State};

pub use batch::BatchMark;
pub use codec::RECORD_VERSION;
pub use commit::CommitStats;
pub use log::DurableLog;
pub use windows::WindowsPruned;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// No space left (or the file size limit reached): retry when space is freed.
    #[error("the disk is full: {0}")]
    Full(String),
    #[error("storage is unavailable: {0}")]
    Unavailable(String),
    #[error("a stored record is corrupt: {0}")]
    Corrupt(String),
    /// The database was written by a newer waq, in a layout this build does not know.
    #[error("{0}")]
    NewerFormat(String),
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        if is_out_of_space(&e) {
            StoreError::Full(plain_io_error(&e))
        } else {
            StoreError::Unavailable(plain_io_error(&e))
        }
    }
}

/// The error as words for a person: sled's copies of an error carry the original's debug
/// form (`Os { code: 28, kind: StorageFull, message: "..." }`) as their message, and a copy
/// of a copy that form inside another (`Custom { kind: .., error: "Os { .. message: \"..\" }" }`).
fn plain_io_error(e: &std::io::Error) -> String {
    let text = match e.raw_os_error() {
        Some(code) => std::io::Error::from_raw_os_error(code).to_string(),
        None => {
            let text = e.to_string();
            match text.rsplit_once("message: ") {
                Some((_, rest)) if text.starts_with("Os {") || text.starts_with("Custom {") => rest
                    .trim_start_matches(['\\', '"'])
                    .split(['\\', '"'])
                    .next()
                    .unwrap_or_default()
                    .to_string(),
                _ if text.starts_with("Kind(") || text.starts_with("Custom {") => {
                    e.kind().to_string()
                }
                _ => text,
            }
        }
    };
    // "No space left on device (os error 28)" reads as "no space left on device".
    let text = match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => &text[..at],
        _ => text.as_str(),
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => e.kind().to_string(),
    }
}

/// ENOSPC, EFBIG (the file size limit) and EDQUOT. sled hands out copies of the error it keeps
/// after a failed write, and its copies drop the OS code but keep the kind; the kinds are
/// compared by name because they are newer than the crate's minimum Rust version.
fn is_out_of_space(e: &std::io::Error) -> bool {
    match e.raw_os_error() {
        Some(code) => [libc::ENOSPC, libc::EFBIG, libc::EDQUOT].contains(&code),
        None => matches!(
            format!("{:?}", e.kind()).as_str(),
            "StorageFull" | "FileTooLarge" | "QuotaExceeded"
        ),
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
    /// The answer to a write the store refused.
    fn from(e: StoreError) -> Self {
        e.into_api_error("nothing was stored")
    }
}

impl StoreError {
    /// The answer to a read the store cannot serve (while it is closed after a full disk or
    /// a write error): the code a write gets, in words about the read.
    pub fn into_read_error(self) -> crate::error::ApiError {
        self.into_api_error("nothing could be read")
    }

    /// The answer to a request the store refused, ending with what came of it (`outcome`).
    pub fn into_api_error(self, outcome: &str) -> crate::error::ApiError {
        match self {
            StoreError::Full(_) => crate::error::ApiError::new(
                507,
                "disk_full",
                format!("{self}; {outcome}: free disk space and retry"),
            ),
            _ => crate::error::ApiError::new(
                503,
                "storage_unavailable",
                format!("{self}; {outcome}: retry later"),
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

fn reopened_meanwhile() -> StoreError {
    StoreError::Unavailable(
        "the store was reopened after an I/O error while this write was waiting for its commit; it may not have been kept, retry it".into(),
    )
}

/// Striped locks serialise read-modify-write of one record without a lock per message.
const STRIPES: usize = 64;

/// Pause between attempts to reopen a database sled gave up on, growing up to the maximum.
const HEAL_FIRST_DELAY: Duration = Duration::from_millis(100);
const HEAL_MAX_DELAY: Duration = Duration::from_secs(5);
/// The least time the database stays closed after sled gave up on it (see `heal_step`).
const HEAL_FENCE: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

/// What outlives one opening of the database.
struct Shared {
    dir: PathBuf,
    cfg: StoreConfig,
    /// The open database; `None` while it is being reopened after sled gave up on it.
    open: RwLock<Option<Arc<Inner>>>,
    /// Why the database is closed, answered to callers until it is open again.
    closed_because: Mutex<Option<StoreError>>,
    /// Set while a healer thread runs, so a burst of failures starts one.
    healing: AtomicBool,
    /// Times the database was reopened after a failure.
    generation: AtomicU64,
    commit_stats: Arc<CommitStats>,
    stripes: Vec<Mutex<()>>,
    /// Held from an idempotency key's claim to its message's write, so a concurrent request
    /// with the same key never takes a claimed key for one a crash left behind.
    key_stripes: Vec<Mutex<()>>,
    counts: [AtomicI64; State::ALL.len()],
}

/// One opening of the database. Every sled handle lives here (and in short-lived borrows of
/// it), so dropping the last `Arc<Inner>` releases sled's lock on the directory.
struct Inner {
    db: sled::Db,
    messages: sled::Tree,
    idempotency: sled::Tree,
    windows: sled::Tree,
    wamids: sled::Tree,
    wa_ids: sled::Tree,
    /// Users reached outside a window, per portfolio (`reached.rs`).
    reached: sled::Tree,
    unfinished_batches: sled::Tree,
    committer: commit::Committer,
    /// `Store::generation()` while this opening is in service.
    generation: u64,
}

impl Inner {
    fn open(dir: &Path, cfg: &StoreConfig, stats: &Arc<CommitStats>) -> Result<Inner, StoreError> {
        create_private_dir(dir)?;
        let db = recovery::open_sled(dir, cfg)?;
        // Before anything is written: a database this release refuses is left as it was.
        check_format(&db, dir)?;
        let messages = db.open_tree("messages")?;
        let idempotency = db.open_tree("idempotency")?;
        let windows = db.open_tree("windows")?;
        let wamids = db.open_tree("wamids")?;
        let wa_ids = db.open_tree(wa_ids::TREE)?;
        let reached = db.open_tree(reached::TREE)?;
        let unfinished_batches = db.open_tree(batch::TREE)?;
        batch::roll_back_unfinished(&messages, &unfinished_batches)?;
        db.flush()?;
        // New files must be reachable after power loss: fsync the directory entries once.
        fsync_dir(dir)?;
        let mut files = Vec::new();
        let data_file = dir.join("db");
        if data_file.exists() {
            files.push(File::open(&data_file)?);
        }
        let committer =
            commit::Committer::start(db.clone(), messages.clone(), files, stats.clone())?;
        Ok(Inner {
            db,
            messages,
            idempotency,
            windows,
            wamids,
            wa_ids,
            reached,
            unfinished_batches,
            committer,
            generation: 0,
        })
    }

    /// Whether sled still takes writes and the data file still syncs. After a failed write
    /// sled 0.34 keeps the error and fails every later write with it, until the database is
    /// opened again.
    fn probe(&self, dir: &Path) -> Result<(), StoreError> {
        self.db.insert(b"waq.probe", &[][..])?;
        self.db.flush()?;
        File::open(dir.join("db"))?.sync_data()?;
        Ok(())
    }
}

/// The layout of the database as a whole (its trees, their keys, the records' framing). It is
/// kept in the database, so that an older waq refuses a database a newer one changed instead
/// of misreading it record by record. Raise it with any change an older release would misread.
pub const DATABASE_FORMAT: u8 = 1;
const FORMAT_KEY: &[u8] = b"waq.format";

/// Marks a database without a mark (new, or written before the mark existed: the same
/// layout) and refuses one marked by a newer release. The mark is flushed with the opening.
fn check_format(db: &sled::Db, dir: &Path) -> Result<(), StoreError> {
    match db.get(FORMAT_KEY)?.as_deref() {
        None => {
            db.insert(FORMAT_KEY, &[DATABASE_FORMAT][..])?;
            Ok(())
        }
        Some([found]) if *found <= DATABASE_FORMAT => Ok(()),
        Some(found) => Err(StoreError::NewerFormat(format!(
            "the database in {} was written by a newer release of waq (database format {}); \
             this release reads format {DATABASE_FORMAT} and older: run the newer release, or \
             a copy of state_dir from before the upgrade",
            dir.display(),
            found
                .iter()
                .map(|b| b.to_string())
                .collect::<Vec<_>>()
                .join(".")
        ))),
    }
}

fn state_index(s: State) -> usize {
    State::ALL.iter().position(|x| *x == s).unwrap_or(0)
}

impl Store {
    /// A store in `dir` with an 8 MiB cache and no timed flush, for unit tests.
    #[cfg(test)]
    pub fn open_for_test(dir: &Path) -> Store {
        let cfg = StoreConfig {
            cache_capacity_bytes: 8 * 1024 * 1024,
            flush_every_ms: None,
        };
        match Store::open(dir, &cfg) {
            Ok(store) => store,
            Err(e) => panic!("cannot open a test store in {}: {e}", dir.display()),
        }
    }

    /// Opens (or creates) the database in `dir`. Call `recover` next to rebuild counts and
    /// hand pending messages to the dispatcher.
    pub fn open(dir: &Path, cfg: &StoreConfig) -> Result<Store, StoreError> {
        let commit_stats = Arc::new(CommitStats::default());
        let inner = Inner::open(dir, cfg, &commit_stats)?;
        Ok(Store {
            shared: Arc::new(Shared {
                dir: dir.to_path_buf(),
                cfg: cfg.clone(),
                open: RwLock::new(Some(Arc::new(inner))),
                closed_because: Mutex::new(None),
                healing: AtomicBool::new(false),
                generation: AtomicU64::new(0),
                commit_stats,
                stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
                key_stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
                counts: Default::default(),
            }),
        })
    }

    /// Why writes are refused right now (the database is being reopened after a write
    /// failed, e.g. on a full disk), or `None` when the store takes writes.
    pub fn refusing_writes(&self) -> Option<StoreError> {
        let open = self
            .shared
            .open
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_some();
        if open && !self.shared.healing.load(SeqCst) {
            return None;
        }
        Some(self.shared.closed_error())
    }

    /// The open database, or the reason it is closed.
    fn inner(&self) -> Result<Arc<Inner>, StoreError> {
        let open = self.shared.open.read().unwrap_or_else(|p| p.into_inner());
        match &*open {
            Some(inner) => Ok(inner.clone()),
            None => Err(self.shared.closed_error()),
        }
    }

    /// Runs `f` on the open database. A failure that may mean sled has given up on the
    /// database starts the healer, which reopens it in the background.
    fn with<R>(&self, f: impl FnOnce(&Inner) -> Result<R, StoreError>) -> Result<R, StoreError> {
        let inner = self.inner()?;
        let result = f(&inner);
        drop(inner);
        if let Err(e) = &result {
            self.failed(e);
        }
        result
    }

    fn failed(&self, e: &StoreError) {
        if matches!(e, StoreError::Full(_) | StoreError::Unavailable(_)) {
            start_healer(&self.shared, e);
        }
    }

    /// Scans every record once, on every core: rebuilds the per-state counts and shows each
    /// message to `each`, with the state of its part (parts are id ranges read side by side;
    /// `new_part` makes one). Answers the total and the parts in id order. Nothing lives only
    /// in memory, so this is all a restart needs. Only before anything else writes: the
    /// counts are replaced by what the scan saw.
    pub fn recover_in_parts<P: Send>(
        &self,
        new_part: impl Fn() -> P + Sync,
        each: impl Fn(&mut P, Message) + Sync,
    ) -> Result<(u64, Vec<P>), StoreError> {
        self.with(|inner| {
            let (counts, parts) = count_states(inner, new_part, each)?;
            Ok((self.shared.set_counts(&counts), parts))
        })
    }

    /// [`recover_in_parts`](Self::recover_in_parts) that hands the messages the dispatcher
    /// still owns to `pending`, in id order.
    pub fn recover(&self, pending: impl FnMut(Message)) -> Result<u64, StoreError> {
        let (total, parts) = self.recover_in_parts(Vec::new, |found, m| {
            if m.state.is_pending() {
                found.push(m);
            }
        })?;
        parts.into_iter().flatten().for_each(pending);
        Ok(total)
    }

    /// Calls `pending` for each message the dispatcher still owns, leaving the per-state
    /// counts alone; returns how many there were. For a resync while the daemon runs: a scan
    /// is no snapshot, and counts taken from it would miss every state that changed behind it.
    pub fn for_each_pending(&self, mut pending: impl FnMut(Message)) -> Result<u64, StoreError> {
        self.with(|inner| {
            let mut n = 0;
            for item in inner.messages.iter() {
                let (_, v) = item?;
                let m: Message = codec::decode(&v)?;
                if m.state.is_pending() {
                    n += 1;
                    pending(m);
                }
            }
            Ok(n)
        })
    }

    /// A new message id, monotonic across restarts (so ids sort by enqueue order).
    pub fn next_id(&self) -> Result<u64, StoreError> {
        // sled's ids start at 0; keep 0 unused so it can mean "none" in cursors.
        self.with(|inner| Ok(inner.db.generate_id()? + 1))
    }

    /// Writes a new message. Not durable until `commit()` returns.
    pub fn insert_new(&self, m: &Message) -> Result<Insert, StoreError> {
        self.with(|inner| {
            let mut _claim = None;
            if let Some(key) = &m.idempotency_key {
                let idem_key = idempotency_key(&m.sender, key);
                _claim = Some(
                    self.shared.key_stripes[stripe_of(&idem_key)]
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()),
                );
                let id_bytes = m.id.to_be_bytes();
                loop {
                    match inner.idempotency.compare_and_swap(
                        &idem_key,
                        None as Option<&[u8]>,
                        Some(&id_bytes[..]),
                    )? {
                        Ok(()) => break,
                        Err(cas) => {
                            let existing = cas.current.as_deref().and_then(id_from_bytes);
                            match existing {
                                // A key left behind by a crash before its message was written
                                // counts as free (under the key's lock no other request is
                                // between its claim and its write).
                                Some(id) if inner.messages.contains_key(id.to_be_bytes())? => {
                                    return Ok(Insert::Duplicate(id))
                                }
                                _ => {
                                    let _ = inner.idempotency.compare_and_swap(
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
            inner
                .messages
                .insert(m.id.to_be_bytes(), codec::encode(m)?)?;
            self.shared.counts[state_index(m.state)].fetch_add(1, Relaxed);
            Ok(Insert::Created)
        })
    }

    /// Writes new messages without idempotency keys (a batch's), several to each copy of a
    /// leaf (`sled::Tree::insert_many`): the ids of a batch ascend, so most of them land in
    /// the same leaf. Not durable until `commit()` returns. On an error, the ones already
    /// written are taken back (best effort) and none is counted.
    pub fn insert_new_keyless(&self, messages: &[&Message]) -> Result<(), StoreError> {
        debug_assert!(messages.iter().all(|m| m.idempotency_key.is_none()));
        self.with(|inner| {
            let records = messages
                .iter()
                .map(|m| Ok((m.id.to_be_bytes(), codec::encode(*m)?)))
                .collect::<Result<Vec<_>, StoreError>>()?;
            if let Err(e) = inner.messages.insert_many(records) {
                for m in messages {
                    let _ = inner.messages.remove(m.id.to_be_bytes());
                }
                return Err(e.into());
            }
            for m in messages {
                self.shared.counts[state_index(m.state)].fetch_add(1, Relaxed);
            }
            Ok(())
        })
    }

    /// Writes a new message without an idempotency key and makes it durable: the commit
    /// thread writes the records of all the enqueues that share its commit with one
    /// `sled::Tree::insert_many` (their ids ascend, so they share leaf copies) before the
    /// flush. Fails, like `commit_since`, if the database was reopened since `generation`.
    /// On an error nothing of the message is kept (best effort) or counted.
    pub async fn insert_new_durably(&self, m: &Message, generation: u64) -> Result<(), StoreError> {
        debug_assert!(m.idempotency_key.is_none());
        let inner = self.inner()?;
        let written_in = inner.generation;
        let record = codec::encode(m)?;
        let result = inner
            .committer
            .write_and_commit(m.id.to_be_bytes(), record)
            .await;
        drop(inner);
        match result {
            // Counted only if no reopening recounted since: it would count the record twice.
            Ok(()) if generation == written_in && self.shared.count_in(written_in, m.state, 1) => {
                Ok(())
            }
            Ok(()) => {
                // A reopening counted what it found; the record is taken back from there.
                self.take_back(m, written_in);
                Err(reopened_meanwhile())
            }
            Err(failure) => {
                self.failed(&failure.error);
                if failure.written {
                    // Counted as written, so that taking it back counts it out again.
                    self.shared.count_in(written_in, m.state, 1);
                    self.take_back(m, written_in);
                }
                Err(failure.error)
            }
        }
    }

    /// Waits until everything written so far is on disk (shared flush + fsync).
    /// Like `commit`, for writes made since `generation()` returned `generation`: fails if the
    /// database was reopened in between (those writes may be gone), so no caller is told
    /// "durable" about a write the reopen dropped.
    pub async fn commit_since(&self, generation: u64) -> Result<(), StoreError> {
        self.commit().await?;
        if self.generation() != generation {
            return Err(reopened_meanwhile());
        }
        Ok(())
    }

    /// Like `commit`, for a caller that can wait a few milliseconds so that a steady stream
    /// of such commits shares fsyncs (the dispatcher's `sending` records).
    pub async fn commit_patient(&self) -> Result<(), StoreError> {
        let inner = self.inner()?;
        let result = inner.committer.commit_patient().await;
        drop(inner);
        if let Err(e) = &result {
            self.failed(e);
        }
        result
    }

    pub async fn commit(&self) -> Result<(), StoreError> {
        let inner = self.inner()?;
        let result = inner.committer.commit().await;
        drop(inner);
        if let Err(e) = &result {
            self.failed(e);
        }
        result
    }

    pub fn get(&self, id: u64) -> Result<Option<Message>, StoreError> {
        self.with(|inner| get(inner, id))
    }

    /// Read-modify-write of one message under its lock. `f` returns `None` to leave the record
    /// unchanged. Returns `Ok(None)` for an unknown id too.
    pub fn update<R>(
        &self,
        id: u64,
        f: impl FnOnce(&mut Message) -> Option<R>,
    ) -> Result<Option<(R, Message)>, StoreError> {
        let _guard = self.shared.stripes[(id as usize) % STRIPES]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        self.with(|inner| {
            let Some(mut m) = get(inner, id)? else {
                return Ok(None);
            };
            let before = m.state;
            let Some(r) = f(&mut m) else {
                return Ok(None);
            };
            inner
                .messages
                .insert(id.to_be_bytes(), codec::encode(&m)?)?;
            if before != m.state {
                self.shared.counts[state_index(before)].fetch_sub(1, Relaxed);
                self.shared.counts[state_index(m.state)].fetch_add(1, Relaxed);
            }
            Ok(Some((r, m)))
        })
    }

    /// Deletes a message and its idempotency key and wamid (retention).
    pub fn remove(&self, m: &Message) -> Result<(), StoreError> {
        let _guard = self.shared.stripes[(m.id as usize) % STRIPES]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        self.with(|inner| self.remove_locked(inner, m))
    }

    /// Retention's removal of `seen`, a copy read earlier: only if the record is still that
    /// copy (no retry or status changed it since). Returns whether it was removed.
    pub fn remove_unchanged(&self, seen: &Message) -> Result<bool, StoreError> {
        let _guard = self.shared.stripes[(seen.id as usize) % STRIPES]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        self.with(|inner| {
            let unchanged = get(inner, seen.id)?.is_some_and(|now| {
                now.state == seen.state && now.updated_at_ms == seen.updated_at_ms
            });
            if unchanged {
                self.remove_locked(inner, seen)?;
            }
            Ok(unchanged)
        })
    }

    /// Deletes `m`, its idempotency key and its wamid; the caller holds its stripe.
    fn remove_locked(&self, inner: &Inner, m: &Message) -> Result<(), StoreError> {
        if inner.messages.remove(m.id.to_be_bytes())?.is_some() {
            self.shared.counts[state_index(m.state)].fetch_sub(1, Relaxed);
        }
        if let Some(key) = &m.idempotency_key {
            let idem_key = idempotency_key(&m.sender, key);
            let _ = inner.idempotency.compare_and_swap(
                idem_key,
                Some(&m.id.to_be_bytes()[..]),
                None as Option<&[u8]>,
            )?;
        }
        if let Some(w) = &m.wamid {
            inner.wamids.remove(w.as_bytes())?;
        }
        // Earlier attempts' wamids, which the message no longer holds but its history does.
        for h in &m.history {
            if let Some(w) = h.detail.strip_prefix(crate::model::ACCEPTED_AS) {
                inner.wamids.remove(w.as_bytes())?;
            }
        }
        Ok(())
    }

    /// Takes back (best effort) a new message whose request is refused after it was written
    /// (`generation`: [`generation`](Self::generation) before it was written).
    /// When the database is closed for reopening, the record cannot be removed now, but the
    /// reopening drops it (it was never committed) and counts again what is there; until then
    /// the counts must not show a message the answer refused. Once that recount is done, the
    /// counts no longer hold the message, and are left alone.
    pub fn take_back(&self, m: &Message, generation: u64) {
        if let Err(StoreError::Full(_) | StoreError::Unavailable(_)) = self.remove(m) {
            self.shared.count_in(generation, m.state, -1);
        }
    }

    /// Messages in id order, starting after `after` (a cursor).
    pub fn scan(
        &self,
        after: Option<u64>,
    ) -> impl Iterator<Item = Result<Message, StoreError>> + '_ {
        let start = after.map(|a| a.saturating_add(1)).unwrap_or(0);
        // The iterator keeps this opening alive (a reopen waits for it) and, if the database
        // is closed, yields that error once.
        let mut state = match self.inner() {
            Ok(inner) => {
                let range = inner.messages.range(start.to_be_bytes()..);
                Ok((inner, range))
            }
            Err(e) => Err(Some(e)),
        };
        std::iter::from_fn(move || match &mut state {
            Ok((_inner, range)) => {
                let item = range.next()?;
                let result = item
                    .map_err(StoreError::from)
                    .and_then(|(_, v)| codec::decode(&v));
                if let Err(e) = &result {
                    self.failed(e);
                }
                Some(result)
            }
            Err(e) => e.take().map(Err),
        })
    }

    pub fn set_wamid(&self, wamid: &str, id: u64) -> Result<(), StoreError> {
        self.with(|inner| {
            inner
                .wamids
                .insert(wamid.as_bytes(), &id.to_be_bytes()[..])?;
            Ok(())
        })
    }

    /// The retained message that holds idempotency key `key` of `sender`, if any.
    pub fn holder_of_key(&self, sender: &str, key: &str) -> Result<Option<Message>, StoreError> {
        let id = self.with(|inner| {
            Ok(inner
                .idempotency
                .get(idempotency_key(sender, key))?
                .and_then(|v| id_from_bytes(&v)))
        })?;
        match id {
            Some(id) => self.get(id),
            None => Ok(None),
        }
    }

    pub fn lookup_wamid(&self, wamid: &str) -> Result<Option<u64>, StoreError> {
        self.with(|inner| {
            Ok(inner
                .wamids
                .get(wamid.as_bytes())?
                .and_then(|v| id_from_bytes(&v)))
        })
    }

    /// Counts of messages per state, in `State::ALL` order.
    pub fn counts(&self) -> Vec<(State, u64)> {
        State::ALL
            .iter()
            .map(|s| {
                (
                    *s,
                    self.shared.counts[state_index(*s)].load(Relaxed).max(0) as u64,
                )
            })
            .collect()
    }

    /// A named durable FIFO (see `DurableLog`), e.g. `webhook_inbox` or `relay`.
    pub fn log(&self, name: &str) -> Result<DurableLog, StoreError> {
        let tree = format!("log:{name}");
        // Created now, so a bad name or a closed store shows up here rather than later.
        self.with(|inner| Ok(inner.db.open_tree(&tree).map(drop)?))?;
        Ok(DurableLog {
            store: self.clone(),
            tree,
        })
    }

    pub fn commit_stats(&self) -> &CommitStats {
        &self.shared.commit_stats
    }

    /// Bytes the database occupies on disk.
    pub fn size_on_disk(&self) -> u64 {
        match self.inner() {
            Ok(inner) => inner.db.size_on_disk().unwrap_or(0),
            // Closed for reopening (a full disk, say): the files are still there, and their
            // size is what the operator needs to see then.
            Err(_) => files_size(&self.shared.dir),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Whether the database is open (false while it is being reopened after a failure).
    pub fn is_open(&self) -> bool {
        self.inner().is_ok()
    }

    /// How many times the database was reopened after sled gave up on it. A reopen loses
    /// what was written but not yet committed, as a restart would: a holder of in-memory
    /// state derived from the store (the dispatcher's schedule) can resync when this changes.
    pub fn generation(&self) -> u64 {
        self.shared.generation.load(Relaxed)
    }

    /// Flushes and fsyncs synchronously (shutdown).
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        self.with(|inner| {
            inner.db.flush()?;
            let data_file = self.shared.dir.join("db");
            if data_file.exists() {
                File::open(&data_file)?.sync_data()?;
            }
            Ok(())
        })
    }
}

/// Creates the state directory for the daemon's user alone (it holds phone numbers, message
/// bodies and inbound payloads), whatever the umask; an existing one that other users can
/// enter is warned of, not changed (its mode may be the operator's choice).
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let meta = std::fs::metadata(dir)?;
    if !meta.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotADirectory,
            "it is not a directory",
        ));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        tracing::warn!(
            state_dir = %dir.display(),
            mode = format!("{mode:04o}"),
            "other users can enter the state directory, which holds phone numbers and message \
             bodies: `chmod 700` it (the systemd unit's StateDirectoryMode does)"
        );
    }
    Ok(())
}

fn get(inner: &Inner, id: u64) -> Result<Option<Message>, StoreError> {
    match inner.messages.get(id.to_be_bytes())? {
        Some(v) => Ok(Some(codec::decode(&v)?)),
        None => Ok(None),
    }
}

/// Decodes every message, counting them per state.
/// The per-state counts of every record, read in parts side by side (see
/// [`Store::recover_in_parts`]).
fn count_states<P: Send>(
    inner: &Inner,
    new_part: impl Fn() -> P + Sync,
    each: impl Fn(&mut P, Message) + Sync,
) -> Result<([u64; State::ALL.len()], Vec<P>), StoreError> {
    let parts = scan::scan_parts(
        &inner.messages,
        scan::threads(),
        || ([0u64; State::ALL.len()], new_part()),
        |(counts, part), m| {
            counts[state_index(m.state)] += 1;
            each(part, m);
        },
    )?;
    let mut counts = [0u64; State::ALL.len()];
    let parts = parts
        .into_iter()
        .map(|(part_counts, part)| {
            counts
                .iter_mut()
                .zip(part_counts)
                .for_each(|(c, n)| *c += n);
            part
        })
        .collect();
    Ok((counts, parts))
}

impl Shared {
    /// Replaces the per-state counts; returns the total.
    fn set_counts(&self, counts: &[u64; State::ALL.len()]) -> u64 {
        for (c, n) in self.counts.iter().zip(counts) {
            c.store(*n as i64, Relaxed);
        }
        counts.iter().sum()
    }

    /// Adds `delta` to the count of `state` if the counts still describe the opening of
    /// `generation`; returns whether it did. For changes counted outside that opening's use
    /// (after a commit, or with the database closed): a reopening recounts from the disk, and
    /// a change counted after that recount would count it twice.
    fn count_in(&self, generation: u64, state: State, delta: i64) -> bool {
        // The reopening recounts and moves to the next generation under the write lock.
        let _open = self.open.read().unwrap_or_else(|p| p.into_inner());
        let current = self.generation.load(Relaxed) == generation;
        if current {
            self.counts[state_index(state)].fetch_add(delta, Relaxed);
        }
        current
    }

    fn closed_error(&self) -> StoreError {
        let why = self
            .closed_because
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        reopening_error(why)
    }

    fn set_closed_because(&self, e: Option<StoreError>) {
        *self
            .closed_because
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = e;
    }

    /// One step of healing. `retired` is the opening taken out of service and when: it is
    /// watched until its last user lets go (sled holds its directory lock until then).
    /// `Err` means "not yet": the reason is logged and kept for callers.
    fn heal_step(&self, retired: &mut Option<(Weak<Inner>, Instant)>) -> Result<(), ()> {
        let current = self.open.read().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(inner) = current {
            if inner.probe(&self.dir).is_ok() {
                // The failure did not stick (a read error, say): nothing to reopen.
                return Ok(());
            }
            *retired = Some((Arc::downgrade(&inner), Instant::now()));
            drop(inner);
            self.open.write().unwrap_or_else(|p| p.into_inner()).take();
            tracing::warn!(
                dir = %self.dir.display(),
                "sled refuses writes after an I/O error; reopening the database \
                 (what was not yet committed is lost, as in a restart)"
            );
        }
        if let Some((old, since)) = retired {
            if old.strong_count() > 0 {
                tracing::debug!("waiting for the last users of the failed database to finish");
                return Err(());
            }
            // A caller that wrote to the failed database and has not yet asked for its
            // commit must get an error, not a commit of the new one (where its write is not).
            if since.elapsed() < HEAL_FENCE {
                return Err(());
            }
        }
        let mut inner = Inner::open(&self.dir, &self.cfg, &self.commit_stats).map_err(|e| {
            tracing::warn!(error = %e, "the database did not reopen yet; retrying");
            self.set_closed_because(Some(e));
        })?;
        // Writes since the last commit are gone: count what the database really holds.
        let (counts, _) = count_states(&inner, || (), |_, _| {}).map_err(|e| {
            tracing::error!(error = %e, "cannot count the messages after reopening; retrying");
        })?;
        {
            // One step for `count_in`: a change is counted before the recount (which replaces
            // it) or refused after it, never added on top of it.
            let mut open = self.open.write().unwrap_or_else(|p| p.into_inner());
            let generation = self.generation.load(Relaxed) + 1;
            inner.generation = generation;
            self.set_counts(&counts);
            *open = Some(Arc::new(inner));
            self.generation.store(generation, Relaxed);
        }
        *retired = None;
        self.set_closed_because(None);
        tracing::info!(dir = %self.dir.display(), "the database is open again");
        Ok(())
    }
}

/// Starts the healer unless one runs: it probes the database and, if sled has given up on it,
/// reopens it, retrying with a growing pause while the cause (a full disk) lasts. Callers
/// meanwhile get an error at once rather than waiting or panicking.
fn start_healer(shared: &Arc<Shared>, cause: &StoreError) {
    if shared.healing.swap(true, SeqCst) {
        return;
    }
    shared.set_closed_because(Some(cause.clone()));
    let weak = Arc::downgrade(shared);
    let spawned = std::thread::Builder::new()
        .name("waq-store-heal".into())
        .spawn(move || {
            let mut retired = None;
            let mut delay = HEAL_FIRST_DELAY;
            // Holds no strong reference between steps, so dropping the store ends it.
            while let Some(shared) = weak.upgrade() {
                if shared.heal_step(&mut retired).is_ok() {
                    shared.healing.store(false, SeqCst);
                    return;
                }
                drop(shared);
                std::thread::sleep(delay);
                delay = (delay * 2).min(HEAL_MAX_DELAY);
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the thread that reopens the database");
        shared.healing.store(false, SeqCst);
    }
}

/// The lock stripe of a key (FNV-1a).
fn stripe_of(key: &[u8]) -> usize {
    let hash = key.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash % STRIPES as u64) as usize
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

/// The bytes of the files under `dir`, subdirectories included (sled's blobs).
fn files_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => files_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// What callers are answered while the store reopens after `why` closed it.
fn reopening_error(why: Option<StoreError>) -> StoreError {
    match why {
        Some(StoreError::Full(m)) => {
            StoreError::Full(format!("{m} (the store reopens once there is room)"))
        }
        // Its own words, not "storage is unavailable: storage is unavailable: …".
        Some(StoreError::Unavailable(m)) => {
            StoreError::Unavailable(format!("{m} (the store is reopening)"))
        }
        Some(e) => StoreError::Unavailable(format!("{e} (the store is reopening)")),
        None => StoreError::Unavailable("the store is reopening".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reopening_store_names_its_cause_once() {
        let read_only = StoreError::Unavailable("read-only file system".into());
        assert_eq!(
            reopening_error(Some(read_only)).to_string(),
            "storage is unavailable: read-only file system (the store is reopening)"
        );
        assert_eq!(
            reopening_error(Some(StoreError::Full("no space left on device".into()))).to_string(),
            "the disk is full: no space left on device (the store reopens once there is room)"
        );
    }

    #[test]
    fn a_database_marked_by_a_newer_release_is_refused_at_opening() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = StoreConfig {
            cache_capacity_bytes: 8 * 1024 * 1024,
            flush_every_ms: None,
        };
        drop(Store::open(dir.path(), &cfg).unwrap());
        {
            let db = recovery::open_sled(dir.path(), &cfg).unwrap();
            // The first opening marked it with this release's format.
            assert_eq!(
                db.get(FORMAT_KEY).unwrap().as_deref(),
                Some(&[DATABASE_FORMAT][..])
            );
            db.insert(FORMAT_KEY, &[DATABASE_FORMAT + 1][..]).unwrap();
            db.flush().unwrap();
        }
        match Store::open(dir.path(), &cfg) {
            Err(StoreError::NewerFormat(m)) => {
                assert!(m.contains("newer release"), "{m}");
                assert!(
                    m.contains(&format!("format {}", DATABASE_FORMAT + 1)),
                    "{m}"
                );
            }
            Err(e) => panic!("refused for another reason: {e}"),
            Ok(_) => panic!("a database of a newer format was opened"),
        }
        // A database from before the mark existed (same layout) opens and is marked.
        {
            let db = recovery::open_sled(dir.path(), &cfg).unwrap();
            db.remove(FORMAT_KEY).unwrap();
            db.flush().unwrap();
        }
        drop(Store::open(dir.path(), &cfg).unwrap());
    }

    #[test]
    fn out_of_space_is_full_even_in_sleds_copy_of_the_error() {
        for code in [libc::ENOSPC, libc::EFBIG, libc::EDQUOT] {
            let original = sled::Error::Io(std::io::Error::from_raw_os_error(code));
            // sled answers every write after a failed one with a clone of that error.
            let copy = original.clone();
            assert!(matches!(StoreError::from(original), StoreError::Full(_)));
            assert!(
                matches!(StoreError::from(copy), StoreError::Full(_)),
                "{code}"
            );
        }
        // Every way the error reaches a client reads as words, not as Rust's debug output:
        // sled's copy, and a copy of that copy.
        let copy = sled::Error::Io(std::io::Error::from_raw_os_error(libc::ENOSPC)).clone();
        let copy_of_copy = copy.clone().clone();
        for copy in [copy, copy_of_copy] {
            let e = crate::error::ApiError::from(StoreError::from(copy));
            assert_eq!(
                e.message,
                "the disk is full: no space left on device; nothing was stored: free disk space and retry"
            );
        }
        let wrapped = std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            format!(
                "{:?}",
                std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    format!("{:?}", std::io::Error::from_raw_os_error(libc::ENOSPC))
                )
            ),
        );
        assert!(wrapped.to_string().starts_with("Custom {"), "{wrapped}");
        assert_eq!(
            StoreError::from(wrapped).to_string(),
            "the disk is full: no space left on device"
        );
        let eio = sled::Error::Io(std::io::Error::from_raw_os_error(libc::EIO));
        let StoreError::Unavailable(text) = StoreError::from(eio.clone()) else {
            panic!("EIO is not a full disk");
        };
        assert_eq!(text, "input/output error");
        assert!(matches!(
            StoreError::from(eio.clone()),
            StoreError::Unavailable(_)
        ));
    }
}
