//! Opening sled, including the recovery of a state directory a crash left behind.

use std::path::Path;

use crate::config::StoreConfig;

use super::StoreError;

/// sled keeps each log item under a quarter of a segment inline; larger ones go to blob files
/// that sled 0.34 never fsyncs. 4 MiB segments keep every node of our capped records inline.
const SEGMENT_SIZE: usize = 4 * 1024 * 1024;

pub fn open_sled(dir: &Path, cfg: &StoreConfig) -> Result<sled::Db, StoreError> {
    let sled_cfg = sled::Config::new()
        .path(dir)
        .cache_capacity(cfg.cache_capacity_bytes)
        .segment_size(SEGMENT_SIZE)
        .flush_every_ms(cfg.flush_every_ms)
        .mode(sled::Mode::HighThroughput);
    Ok(sled_cfg.open()?)
}
