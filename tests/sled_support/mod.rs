//! What the tests of the carried sled share.
#![allow(dead_code)] // each test binary uses its own part of this

use std::path::Path;
use std::time::{Duration, Instant};

/// Opens the database at `dir` again, waiting while the handle dropped just before still
/// holds its lock: sled's background threads let go of it a moment after the last handle.
pub fn reopen(dir: &Path) -> sled::Db {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match sled::open(dir) {
            Ok(db) => return db,
            Err(e)
                if Instant::now() < deadline
                    && e.to_string().contains("could not acquire lock") =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("cannot reopen {}: {e}", dir.display()),
        }
    }
}

/// Every key of `tree` with its value, in order.
pub fn contents(tree: &sled::Tree) -> Vec<(Vec<u8>, Vec<u8>)> {
    tree.iter()
        .map(|kv| {
            let (k, v) = kv.unwrap();
            (k.to_vec(), v.to_vec())
        })
        .collect()
}
