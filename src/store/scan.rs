//! Reading every message record at start, on every core. A restart reads the whole `messages`
//! tree once (counts, the dispatcher's schedule), and with a million queued that read is the
//! restart: about 2 µs a record on one thread, most of it sled paging nodes in and decoding
//! records. Records are keyed by id, so the id range splits into parts that threads read
//! side by side.

use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};

use crate::model::Message;

use super::{codec, StoreError};

/// Ids from, to.
type IdRange = (Bound<[u8; 8]>, Bound<[u8; 8]>);

/// Parts per thread: a thread that drew a sparse part (ids jump at each restart, and old
/// messages are removed) takes the next, so that no thread is left with most of the work.
const PARTS_PER_THREAD: usize = 16;

/// More threads than this gain nothing: they contend on sled's page cache.
const MAX_THREADS: usize = 4;

/// The threads a scan uses: one per core, at most [`MAX_THREADS`].
pub fn threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_THREADS)
}

/// Calls `each` for every record of `tree` (keyed by big-endian id), on up to `threads`
/// threads, each part with its own state from `new_part`. Answers the parts' states in key
/// order, so that their concatenation is the tree in order. Stops at the first error.
pub fn scan_parts<P: Send>(
    tree: &sled::Tree,
    threads: usize,
    new_part: impl Fn() -> P + Sync,
    each: impl Fn(&mut P, Message) + Sync,
) -> Result<Vec<P>, StoreError> {
    let bounds = split(tree, threads)?;
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let read_parts = || -> Result<Vec<(usize, P)>, StoreError> {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Relaxed);
            let Some(range) = bounds.get(i) else {
                return Ok(done);
            };
            if failed.load(Relaxed) {
                return Ok(done);
            }
            let mut part = new_part();
            for item in tree.range::<[u8; 8], _>(*range) {
                let read = item
                    .map_err(StoreError::from)
                    .and_then(|(_, v)| codec::decode::<Message>(&v));
                match read {
                    Ok(m) => each(&mut part, m),
                    Err(e) => {
                        failed.store(true, Relaxed);
                        return Err(e);
                    }
                }
            }
            done.push((i, part));
        }
    };
    let mut parts: Vec<(usize, P)> = Vec::with_capacity(bounds.len());
    let workers = threads.clamp(1, bounds.len().max(1));
    std::thread::scope(|s| {
        // The calling thread reads too: one fewer to start. A thread the system refuses
        // leaves its parts to the others.
        let helpers: Vec<_> = (1..workers)
            .filter_map(|_| {
                std::thread::Builder::new()
                    .name("waq-scan".into())
                    .spawn_scoped(s, read_parts)
                    .ok()
            })
            .collect();
        let mut first_error = read_parts().map(|done| parts.extend(done)).err();
        for h in helpers {
            match h.join() {
                Ok(Ok(done)) => parts.extend(done),
                Ok(Err(e)) => first_error = first_error.or(Some(e)),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        first_error.map_or(Ok(()), Err)
    })?;
    parts.sort_unstable_by_key(|(i, _)| *i);
    Ok(parts.into_iter().map(|(_, p)| p).collect())
}

/// The id ranges of the parts, in order: together they cover every key, whatever its form.
fn split(tree: &sled::Tree, threads: usize) -> Result<Vec<IdRange>, StoreError> {
    let whole = vec![(Bound::Unbounded, Bound::Unbounded)];
    let id = |k: Option<(sled::IVec, sled::IVec)>| {
        k.and_then(|(k, _)| <[u8; 8]>::try_from(&k[..]).ok())
            .map(u64::from_be_bytes)
    };
    let (Some(first), Some(last)) = (id(tree.first()?), id(tree.last()?)) else {
        return Ok(whole);
    };
    let parts = (threads.max(1) * PARTS_PER_THREAD) as u64;
    let span = last.saturating_sub(first);
    if threads <= 1 || span < parts {
        return Ok(whole);
    }
    // Part i starts at first + span·i/parts; the first and last parts are open-ended.
    let starts: Vec<u64> = (1..parts)
        .map(|i| first + ((span as u128 * i as u128) / parts as u128) as u64)
        .collect();
    let mut bounds = Vec::with_capacity(parts as usize);
    let mut from = Bound::Unbounded;
    for s in starts {
        let to = s.to_be_bytes();
        bounds.push((from, Bound::Excluded(to)));
        from = Bound::Included(to);
    }
    bounds.push((from, Bound::Unbounded));
    Ok(bounds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree_with(ids: &[u64]) -> (tempfile::TempDir, sled::Tree) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let tree = db.open_tree("messages").unwrap();
        for &id in ids {
            let m = Message {
                id,
                ..codec::sample()
            };
            tree.insert(id.to_be_bytes(), codec::encode(&m).unwrap())
                .unwrap();
        }
        (dir, tree)
    }

    fn ids_read(tree: &sled::Tree, threads: usize) -> Vec<u64> {
        scan_parts(tree, threads, Vec::new, |v, m| v.push(m.id))
            .unwrap()
            .concat()
    }

    #[test]
    fn every_record_once_in_order_whatever_the_threads_and_gaps() {
        // Dense ids, a jump (a restart's), and a lone id far away.
        let mut ids: Vec<u64> = (1..=3_000).collect();
        ids.extend(1_000_000..1_002_000);
        ids.push(u64::MAX - 1);
        let (_dir, tree) = tree_with(&ids);
        for threads in [1, 2, 3, 4] {
            assert_eq!(ids_read(&tree, threads), ids, "{threads} threads");
        }
    }

    #[test]
    fn few_or_no_records() {
        let (_dir, tree) = tree_with(&[]);
        assert!(ids_read(&tree, 4).is_empty());
        let (_dir, tree) = tree_with(&[5, 9]);
        assert_eq!(ids_read(&tree, 4), vec![5, 9]);
    }

    #[test]
    fn an_undecodable_record_is_an_error_from_any_thread() {
        let ids: Vec<u64> = (1..=5_000).collect();
        let (_dir, tree) = tree_with(&ids);
        tree.insert(4_321u64.to_be_bytes(), &[99u8, 1, 2][..])
            .unwrap();
        for threads in [1, 2, 4] {
            let e = scan_parts(&tree, threads, || (), |_, _| {}).unwrap_err();
            assert!(e.to_string().contains("version 99"), "{e}");
        }
    }
}
