//! The carried sled writes zeros ahead of its log (`vendor/sled/WAQ_PATCH.md`): the file always
//! reaches whole segments past the one being written, so a log write lands on blocks the file
//! has and the fsync after it has no new size or blocks to journal. This drives real sled in a
//! temp dir and checks the file's length after every flush, and every key after a reopen.

mod sled_support;

const SEGMENT: u64 = 512 * 1024;

fn value(i: u32) -> Vec<u8> {
    format!("{i:08}").repeat(128).into_bytes()
}

fn file_len(dir: &std::path::Path) -> u64 {
    std::fs::metadata(dir.join("db")).unwrap().len()
}

#[test]
fn the_log_never_grows_its_file_and_reopens_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut lengths = Vec::new();
    {
        let db = sled::open(dir.path()).unwrap();
        lengths.push(file_len(dir.path()));
        for i in 0..6_000u32 {
            db.insert(i.to_be_bytes(), value(i)).unwrap();
            if i % 500 == 499 {
                db.flush().unwrap();
                lengths.push(file_len(dir.path()));
            }
        }
    }
    // Each flush wrote into zeros laid down before it: the file ends on a segment boundary,
    // never where the log's last write ended, and it grew with the ~6 MiB written.
    assert!(
        lengths.iter().all(|l| *l > 0 && l % SEGMENT == 0),
        "{lengths:?}"
    );
    assert!(lengths.last() > Some(&(12 * SEGMENT)), "{lengths:?}");

    let db = sled_support::reopen(dir.path());
    assert_eq!(file_len(dir.path()) % SEGMENT, 0);
    assert_eq!(db.len(), 6_000);
    for i in (0..6_000u32).step_by(7) {
        assert_eq!(
            db.get(i.to_be_bytes()).unwrap().as_deref(),
            Some(&value(i)[..])
        );
    }
}
