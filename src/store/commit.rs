//! Group commit: every enqueue that needs durability asks for a commit; one thread flushes sled
//! and fsyncs its files for all the requests that arrived meanwhile, so many enqueues share one
//! fsync and throughput grows with concurrency.

use std::fs::File;
use std::sync::mpsc;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::StoreError;

type Waiter = oneshot::Sender<Result<(), StoreError>>;

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
    pub fn start(db: sled::Db, files: Vec<File>, stats: Arc<CommitStats>) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Waiter>();
        let thread = std::thread::Builder::new()
            .name("waq-commit".into())
            .spawn(move || run(db, files, rx, stats))?;
        Ok(Committer {
            requests: Some(tx),
            thread: Some(thread),
        })
    }

    /// Resolves once everything written before the call is on disk.
    pub async fn commit(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .as_ref()
            .ok_or_else(|| StoreError::Unavailable("the store is closing".into()))?
            .send(tx)
            .map_err(|_| StoreError::Unavailable("the commit thread has stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("the commit thread has stopped".into()))?
    }
}

fn run(db: sled::Db, files: Vec<File>, rx: mpsc::Receiver<Waiter>, stats: Arc<CommitStats>) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut batch: Vec<Waiter> = Vec::with_capacity(1024);
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let result = sync(&db, &files);
        stats.commits.fetch_add(1, Relaxed);
        stats.waiters.fetch_add(batch.len() as u64, Relaxed);
        for waiter in batch.drain(..) {
            let _ = waiter.send(result.clone());
        }
    }
}

fn sync(db: &sled::Db, files: &[File]) -> Result<(), StoreError> {
    db.flush().map_err(StoreError::from)?;
    for f in files {
        f.sync_data().map_err(StoreError::from)?;
    }
    Ok(())
}
