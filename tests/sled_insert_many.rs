//! The carried sled (`vendor/sled`) has `Tree::insert_many`, which applies every key of a run
//! that lands in one leaf to a single copy of it, and splits a leaf the run overfills in
//! memory (waq writes a batch's messages with it; see `vendor/sled/WAQ_PATCH.md`). This
//! drives real sled in a temp dir through it — ascending runs as a batch writes them, runs
//! in any order over keys already there, runs racing plain inserts and other runs on other
//! threads, runs racing removals that merge leaves — and checks every key, also after a
//! reopen.

mod sled_support;

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};
use std::thread;

use sled_support::{contents, reopen};

type Expected = BTreeMap<Vec<u8>, Vec<u8>>;

fn key(id: u64) -> Vec<u8> {
    id.to_be_bytes().to_vec()
}

/// About the size of a message record, so leaves fill and split as waq's do.
fn value(id: u64, round: u32) -> Vec<u8> {
    let mut v = format!("record {id:08} round {round} ").into_bytes();
    v.resize(300, b'.');
    v
}

fn assert_same(tree: &sled::Tree, expected: &Expected) {
    let found = contents(tree);
    assert_eq!(found.len(), expected.len(), "number of keys");
    for ((k, v), (ek, ev)) in found.iter().zip(expected) {
        assert_eq!(k, ek, "keys differ");
        assert!(v == ev, "the value of key {k:?} differs");
    }
    for (k, v) in expected.iter().step_by(31) {
        assert_eq!(tree.get(k).unwrap().as_deref(), Some(&v[..]));
    }
    let reversed = tree.iter().rev().map(|kv| kv.unwrap().0.to_vec());
    assert!(reversed.eq(expected.keys().rev().cloned()));
}

/// Opens the database in `dir` again (its last handle just dropped, after a flush) and
/// checks its tree against `expected`.
fn assert_same_after_reopen(dir: &std::path::Path, expected: &Expected) {
    let db = reopen(dir);
    assert_same(&db.open_tree("messages").unwrap(), expected);
}

#[test]
fn ascending_runs_and_runs_in_any_order_keep_every_key_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = Expected::new();
    {
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree("messages").unwrap();
        // Batches of ascending ids, of every size from 1 to past a few leaves, between
        // single inserts: what the daemon's batch and single enqueues write. The longest
        // runs split their leaves in memory past what one index node takes.
        let mut next = 0u64;
        for size in (1..=60).chain([1000, 1, 2, 999, 5000]) {
            let run: Vec<(Vec<u8>, Vec<u8>)> = (next..next + size)
                .map(|id| (key(id), value(id, 0)))
                .collect();
            tree.insert_many(run.clone()).unwrap();
            expected.extend(run);
            next += size;
            tree.insert(key(next), value(next, 0)).unwrap();
            expected.insert(key(next), value(next, 0));
            next += 1;
        }
        assert_same(&tree, &expected);

        // Runs in random order over keys already there (new values) and new ones between.
        let mut rng = fastrand::Rng::with_seed(11);
        for round in 1..=20 {
            let run: Vec<(Vec<u8>, Vec<u8>)> = (0..rng.usize(1..400))
                .map(|_| {
                    let id = rng.u64(..next * 2);
                    (key(id), value(id, round))
                })
                .collect();
            tree.insert_many(run.clone()).unwrap();
            expected.extend(run);
        }
        // Removals leave room in leaves a later run fills again.
        for id in (0..next).step_by(3) {
            tree.remove(key(id)).unwrap();
            expected.remove(&key(id));
        }
        let refill: Vec<(Vec<u8>, Vec<u8>)> = (0..next)
            .step_by(3)
            .map(|id| (key(id), value(id, 99)))
            .collect();
        tree.insert_many(refill.clone()).unwrap();
        expected.extend(refill);
        tree.insert_many(Vec::<(Vec<u8>, Vec<u8>)>::new()).unwrap();
        assert_same(&tree, &expected);
        db.flush().unwrap();
    }
    assert_same_after_reopen(dir.path(), &expected);
}

#[test]
fn runs_racing_inserts_and_other_runs_lose_no_key() {
    const THREADS: u64 = 4;
    const RUNS: u64 = 40;
    const RUN: u64 = 250;
    let dir = tempfile::tempdir().unwrap();
    let expected = {
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree("messages").unwrap();
        let start = Arc::new(Barrier::new(THREADS as usize + 1));
        let ids = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut workers = Vec::new();
        for t in 0..THREADS {
            let (tree, start, ids) = (tree.clone(), start.clone(), ids.clone());
            workers.push(thread::spawn(move || {
                let mut written = Expected::new();
                start.wait();
                for _ in 0..RUNS {
                    // Ids taken from one counter, as the daemon's are: the threads' runs
                    // interleave at the right edge of the tree, where every one of them writes.
                    let first = ids.fetch_add(RUN, std::sync::atomic::Ordering::Relaxed);
                    let run: Vec<(Vec<u8>, Vec<u8>)> = (first..first + RUN)
                        .map(|id| (key(id), value(id, 0)))
                        .collect();
                    if t == 0 {
                        // One thread writes its keys one by one, racing the runs.
                        for (k, v) in &run {
                            tree.insert(k, v.clone()).unwrap();
                        }
                    } else {
                        tree.insert_many(run.clone()).unwrap();
                    }
                    written.extend(run);
                }
                written
            }));
        }
        start.wait();
        let mut expected = Expected::new();
        for w in workers {
            expected.extend(w.join().unwrap());
        }
        assert_eq!(expected.len() as u64, THREADS * RUNS * RUN);
        assert_same(&tree, &expected);
        db.flush().unwrap();
        expected
    };
    assert_same_after_reopen(dir.path(), &expected);
}

#[test]
fn runs_racing_removals_that_merge_leaves_lose_no_key() {
    const PREFILL: u64 = 40_000;
    const RUNS: u64 = 30;
    const RUN: u64 = 300;
    // The prefill writes the even ids below PREFILL; the remover takes all but every 10th
    // of them while the refiller writes every odd id in between.
    let removed = |id: u64| id < PREFILL && id % 2 == 0 && id % 10 != 0;
    let dir = tempfile::tempdir().unwrap();
    let expected = {
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree("messages").unwrap();
        let prefill: Vec<(Vec<u8>, Vec<u8>)> = (0..PREFILL)
            .step_by(2)
            .map(|id| (key(id), value(id, 0)))
            .collect();
        tree.insert_many(prefill.clone()).unwrap();
        let mut expected: Expected = prefill.into_iter().collect();
        let start = Arc::new(Barrier::new(4));
        // Removals empty leaves below the merge threshold, so sled merges them into their
        // left siblings...
        let remover = {
            let (tree, start) = (tree.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                for id in (0..PREFILL).filter(|id| removed(*id)) {
                    tree.remove(key(id)).unwrap();
                }
            })
        };
        // ...while ascending runs of new keys overfill the same leaves and split them in
        // memory (leaves with a right sibling, not the tree's right edge)...
        let refiller = {
            let (tree, start) = (tree.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                let odd: Vec<u64> = (1..PREFILL).step_by(2).collect();
                for chunk in odd.chunks(150) {
                    let run: Vec<(Vec<u8>, Vec<u8>)> =
                        chunk.iter().map(|id| (key(*id), value(*id, 1))).collect();
                    tree.insert_many(run).unwrap();
                }
            })
        };
        // ...and runs at the right edge, as the daemon's batches write them meanwhile.
        let appender = {
            let (tree, start) = (tree.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                let mut written = Expected::new();
                for r in 0..RUNS {
                    let first = PREFILL + r * RUN;
                    let run: Vec<(Vec<u8>, Vec<u8>)> = (first..first + RUN)
                        .map(|id| (key(id), value(id, 0)))
                        .collect();
                    tree.insert_many(run.clone()).unwrap();
                    written.extend(run);
                }
                written
            })
        };
        start.wait();
        remover.join().unwrap();
        refiller.join().unwrap();
        expected.extend(appender.join().unwrap());
        expected.retain(|k, _| !removed(u64::from_be_bytes(k[..].try_into().unwrap())));
        expected.extend((1..PREFILL).step_by(2).map(|id| (key(id), value(id, 1))));
        assert_same(&tree, &expected);
        db.flush().unwrap();
        expected
    };
    assert_same_after_reopen(dir.path(), &expected);
}

#[test]
fn a_watcher_sees_every_key_of_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let tree = db.open_tree("messages").unwrap();
    let mut events = tree.watch_prefix(vec![]);
    let run: Vec<(Vec<u8>, Vec<u8>)> = (0..50).map(|id| (key(id), value(id, 0))).collect();
    tree.insert_many(run.clone()).unwrap();
    for (k, v) in run {
        match events.next() {
            Some(sled::Event::Insert { key, value }) => {
                assert_eq!(key.as_ref(), &k[..]);
                assert_eq!(value.as_ref(), &v[..]);
            }
            other => panic!("expected the insert of {k:?}, got {other:?}"),
        }
    }
}
