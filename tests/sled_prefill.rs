//! The carried sled writes zeros ahead of its log (`vendor/sled/WAQ_PATCH.md`): the file always
//! reaches the end of the segment being written, and the next segment is zeroed in the
//! background, so a log write lands on blocks the file has and the fsync after it has no new
//! size or blocks to journal. This drives real sled in a temp dir and checks, after every
//! flush, that the file reaches past the segment of its last written byte, and every key after
//! a reopen.

mod sled_support;

const SEGMENT: u64 = 512 * 1024;

fn value(i: u32) -> Vec<u8> {
    format!("{i:08}").repeat(128).into_bytes()
}

fn file_len(dir: &std::path::Path) -> u64 {
    std::fs::metadata(dir.join("db")).unwrap().len()
}

/// The file's length, and where the segment that holds its last non-zero byte ends.
fn len_and_data_segment_end(dir: &std::path::Path) -> (u64, u64) {
    let bytes = std::fs::read(dir.join("db")).unwrap();
    let data_end = bytes
        .iter()
        .rposition(|b| *b != 0)
        .map_or(0, |i| i as u64 + 1);
    (bytes.len() as u64, data_end.div_ceil(SEGMENT) * SEGMENT)
}

#[test]
fn the_log_never_grows_its_file_and_reopens_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut seen = Vec::new();
    {
        let db = sled::open(dir.path()).unwrap();
        // At least the first segment, zeroed before the open returns.
        let opened = file_len(dir.path());
        assert!(opened >= SEGMENT, "{opened}");
        for i in 0..6_000u32 {
            db.insert(i.to_be_bytes(), value(i)).unwrap();
            if i % 500 == 499 {
                db.flush().unwrap();
                seen.push(len_and_data_segment_end(dir.path()));
            }
        }
    }
    // Each flush wrote into zeros laid down before it: the file reaches at least to the end
    // of the segment being written, never only to where the log's last write ended, and it
    // grew with the ~6 MiB written.
    assert!(
        seen.iter().all(|(len, end)| *end > 0 && len >= end),
        "(length, end of the last data's segment): {seen:?}"
    );
    assert!(seen.last().unwrap().0 > 12 * SEGMENT, "{seen:?}");
    // Once the database is closed, the background zeros are all written: whole segments.
    let closed = file_len(dir.path());
    assert_eq!(closed % SEGMENT, 0, "{closed}");

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
