//! The carried sled (`vendor/sled`) splits the rightmost node of a tree unevenly, so that
//! ascending keys fill their leaves (see `vendor/sled/WAQ_PATCH.md`). This drives real sled in a
//! temp dir through every shape of change that meets that split — appends (leaf, index and root
//! splits), random inserts, removals down to merges — and checks every key after a reopen.

mod sled_support;

use std::collections::BTreeMap;

use sled_support::{contents, reopen};

const APPENDED: u64 = 60_000;
const RANDOM: usize = 20_000;

fn key(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

fn value(id: u64) -> Vec<u8> {
    format!("record {id:08}").into_bytes()
}

/// Every key of `tree` in order, against what should be there.
fn assert_same(tree: &sled::Tree, expected: &BTreeMap<Vec<u8>, Vec<u8>>) {
    let found = contents(tree);
    let wanted: Vec<(Vec<u8>, Vec<u8>)> = expected
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(found.len(), wanted.len(), "number of keys");
    assert!(found == wanted, "the tree's keys or values differ");
    for (k, v) in expected.iter().step_by(97) {
        assert_eq!(tree.get(k).unwrap().as_deref(), Some(&v[..]));
    }
    // Backwards and from the middle, which walk the nodes another way.
    let reversed: Vec<Vec<u8>> = tree.iter().rev().map(|kv| kv.unwrap().0.to_vec()).collect();
    assert!(reversed.iter().rev().eq(expected.keys()));
    let middle = key(APPENDED / 2);
    let from_middle = tree.range(&middle[..]..).count();
    assert_eq!(from_middle, expected.range(middle.to_vec()..).count());
}

#[test]
fn appends_random_inserts_and_removals_keep_every_key_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut appended = BTreeMap::new();
    let mut random = BTreeMap::new();
    {
        let db = sled::open(dir.path()).unwrap();
        let ids = db.open_tree("ids").unwrap();
        let names = db.open_tree("names").unwrap();
        let mut rng = fastrand::Rng::with_seed(7);
        for id in 0..APPENDED {
            ids.insert(key(id), value(id)).unwrap();
            appended.insert(key(id).to_vec(), value(id));
        }
        for _ in 0..RANDOM {
            let k = format!("wamid.{:016x}", rng.u64(..)).into_bytes();
            let v = rng.u64(..).to_le_bytes().to_vec();
            names.insert(&k, v.clone()).unwrap();
            random.insert(k, v);
        }
        // Every third id, then a whole run of them: leaves thin out, then merge away.
        for id in (0..APPENDED).step_by(3) {
            ids.remove(key(id)).unwrap();
            appended.remove(key(id).as_slice());
        }
        for id in 20_000..30_000 {
            ids.remove(key(id)).unwrap();
            appended.remove(key(id).as_slice());
        }
        // Appends after the removals, and rewrites of the survivors.
        for id in APPENDED..APPENDED + 5_000 {
            ids.insert(key(id), value(id)).unwrap();
            appended.insert(key(id).to_vec(), value(id));
        }
        for id in (1..APPENDED).step_by(5) {
            if appended.contains_key(key(id).as_slice()) {
                let v = format!("rewritten {id}").into_bytes();
                ids.insert(key(id), v.clone()).unwrap();
                appended.insert(key(id).to_vec(), v);
            }
        }
        assert_same(&ids, &appended);
        assert_same(&names, &random);
        db.flush().unwrap();
    }
    let db = reopen(dir.path());
    assert_same(&db.open_tree("ids").unwrap(), &appended);
    assert_same(&db.open_tree("names").unwrap(), &random);
}
