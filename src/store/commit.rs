//! Group commit: every enqueue that needs durability asks for a commit; one thread flushes sled
//! and fsyncs its files for all the requests that arrived meanwhile, so many enqueues share one
//! fsync and throughput grows with concurrency.

use std::fs::File;
use std::sync::mpsc;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::StoreError;

/// A request for durability. A `patient` one (the dispatcher's `sending` records: the
/// request to Meta that follows takes a hundred milliseconds anyway) may wait up to
/// [`PATIENCE`] for company, so a steady stream of sends shares few fsyncs; an enqueue's
/// commit is never delayed, and takes every waiting patient one with it.
struct Waiter {
    reply: oneshot::Sender<Result<(), Failure>>,
    patient: bool,
    /// A new message's record (key, value) that the commit thread writes to the `messages`
    /// tree before the flush, with the records of every other waiter of the same commit in
    /// one `sled::Tree::insert_many`: their ids ascend, so they share a leaf copy.
    record: Option<([u8; 8], Vec<u8>)>,
}

/// Why a commit failed, and whether the waiter's record was written (and so must be taken
/// back) or not (the commit thread removed what it could of it already).
#[derive(Debug)]
pub struct Failure {
    pub error: StoreError,
    pub written: bool,
}

/// How long a patient commit may wait for others before its fsync.
const PATIENCE: std::time::Duration = std::time::Duration::from_millis(5);

pub struct Committer {
    requests: Option<mpsc::Sender<Waiter>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Committer {
    /// Stops the thread and waits for it, so its handle on the database is gone when the
    /// store is dropped (sled locks the directory while any handle lives).
    fn drop(&mut self) {
        self.requests.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Counters of the group commit, for `/metrics` and benches.
#[derive(Default)]
pub struct CommitStats {
    pub commits: std::sync::atomic::AtomicU64,
    pub waiters: std::sync::atomic::AtomicU64,
}

impl Committer {
    /// Starts the commit thread. `files` are fsync'd after each sled flush: sled 0.34 ends its
    /// flush with `sync_file_range`, which does not make the data durable on every filesystem.
    pub fn start(
        db: sled::Db,
        messages: sled::Tree,
        files: Vec<File>,
        stats: Arc<CommitStats>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Waiter>();
        let thread = std::thread::Builder::new()
            .name("waq-commit".into())
            .spawn(move || run(db, messages, files, rx, stats))?;
        Ok(Committer {
            requests: Some(tx),
            thread: Some(thread),
        })
    }

    /// Resolves once everything written before the call is on disk.
    pub async fn commit(&self) -> Result<(), StoreError> {
        self.request(false, None).await.map_err(|f| f.error)
    }

    /// Like `commit`, but may wait a few milliseconds to share its fsync with others.
    pub async fn commit_patient(&self) -> Result<(), StoreError> {
        self.request(true, None).await.map_err(|f| f.error)
    }

    /// Writes `value` at `key` in the `messages` tree and commits it, with the records of
    /// the other enqueues of the same commit.
    pub async fn write_and_commit(&self, key: [u8; 8], value: Vec<u8>) -> Result<(), Failure> {
        self.request(false, Some((key, value))).await
    }

    async fn request(
        &self,
        patient: bool,
        record: Option<([u8; 8], Vec<u8>)>,
    ) -> Result<(), Failure> {
        let not_written = |error| Failure {
            error,
            written: false,
        };
        let (tx, rx) = oneshot::channel();
        self.requests
            .as_ref()
            .ok_or_else(|| not_written(StoreError::Unavailable("the store is closing".into())))?
            .send(Waiter {
                reply: tx,
                patient,
                record,
            })
            .map_err(|_| {
                not_written(StoreError::Unavailable(
                    "the commit thread has stopped".into(),
                ))
            })?;
        if !patient {
            // A thread waiting out the patience of others is parked, not in `recv`.
            if let Some(t) = &self.thread {
                t.thread().unpark();
            }
        }
        // A commit thread that stopped before answering never wrote the record.
        rx.await.map_err(|_| {
            not_written(StoreError::Unavailable(
                "the commit thread has stopped".into(),
            ))
        })?
    }
}

fn run(
    db: sled::Db,
    messages: sled::Tree,
    files: Vec<File>,
    rx: mpsc::Receiver<Waiter>,
    stats: Arc<CommitStats>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut batch: Vec<Waiter> = Vec::with_capacity(1024);
    while let Ok(first) = rx.recv() {
        batch.push(first);
        // An enqueue's commit takes whoever arrived during the last flush, and waits for no
        // one else: a busy socket refills the group while the disk works, and a linger for
        // more made single enqueue slower (docs/PERFORMANCE.md, change 39).
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        if batch.iter().all(|w| w.patient) {
            wait_out_patience(&rx, &mut batch);
        }
        let written = write_records(&messages, &batch);
        let result = sync(&db, &files);
        stats.commits.fetch_add(1, Relaxed);
        stats.waiters.fetch_add(batch.len() as u64, Relaxed);
        for waiter in batch.drain(..) {
            let answer = match (waiter.record.is_some(), &written, &result) {
                (true, Err(e), _) => Err(Failure {
                    error: e.clone(),
                    written: false,
                }),
                (writes, _, Err(e)) => Err(Failure {
                    error: e.clone(),
                    written: writes,
                }),
                (_, _, Ok(())) => Ok(()),
            };
            let _ = waiter.reply.send(answer);
        }
    }
}

/// Writes the records the waiters carry, in key order. On an error, removes what it can of
/// them, so that none is left behind unanswered.
fn write_records(messages: &sled::Tree, batch: &[Waiter]) -> Result<(), StoreError> {
    let mut records: Vec<([u8; 8], &[u8])> = batch
        .iter()
        .filter_map(|w| w.record.as_ref().map(|(k, v)| (*k, &v[..])))
        .collect();
    if records.is_empty() {
        return Ok(());
    }
    records.sort_unstable_by_key(|(k, _)| *k);
    let result = messages.insert_many(records.iter().copied());
    if result.is_err() {
        for (k, _) in records.iter() {
            let _ = messages.remove(k);
        }
    }
    result.map_err(StoreError::from)
}

fn sync(db: &sled::Db, files: &[File]) -> Result<(), StoreError> {
    db.flush().map_err(StoreError::from)?;
    for f in files {
        f.sync_data().map_err(StoreError::from)?;
    }
    Ok(())
}

/// Lets a batch of patient requests wait up to [`PATIENCE`] for company. Parked, not in a
/// timed receive: each patient request that arrives meanwhile would wake a receiving thread
/// (a thousand wake-ups a second at 1,000 MPS); only an eager request unparks it, and ends
/// the wait.
fn wait_out_patience(rx: &mpsc::Receiver<Waiter>, batch: &mut Vec<Waiter>) {
    let deadline = std::time::Instant::now() + PATIENCE;
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        std::thread::park_timeout(left);
        let mut eager = false;
        while let Ok(more) = rx.try_recv() {
            eager |= !more.patient;
            batch.push(more);
        }
        if eager {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;

    fn committer(dir: &std::path::Path) -> (sled::Db, Committer, Arc<CommitStats>) {
        let db = sled::open(dir).unwrap();
        let stats = Arc::new(CommitStats::default());
        let messages = db.open_tree("messages").unwrap();
        let c = Committer::start(db.clone(), messages, Vec::new(), stats.clone()).unwrap();
        (db, c, stats)
    }

    #[tokio::test]
    async fn patient_and_eager_commits_all_resolve_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (db, c, stats) = committer(dir.path());
            db.insert(b"patient-alone", b"1").unwrap();
            c.commit_patient().await.unwrap();

            let c = Arc::new(c);
            let mut tasks = Vec::new();
            for i in 0..40u32 {
                let (db, c) = (db.clone(), c.clone());
                tasks.push(tokio::spawn(async move {
                    db.insert(i.to_be_bytes(), b"x").unwrap();
                    if i % 10 == 0 {
                        c.commit().await
                    } else {
                        c.commit_patient().await
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap().unwrap();
            }
            assert_eq!(stats.waiters.load(Relaxed), 41);
            drop(c);
        }
        let db = sled::open(dir.path()).unwrap();
        assert!(db.get(b"patient-alone").unwrap().is_some());
        for i in 0..40u32 {
            assert!(db.get(i.to_be_bytes()).unwrap().is_some(), "key {i}");
        }
    }

    #[tokio::test]
    async fn a_closed_committer_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, mut c, _) = committer(dir.path());
        c.requests.take();
        let err = c.commit().await.unwrap_err();
        assert!(err.to_string().contains("closing"), "{err}");
    }
}
