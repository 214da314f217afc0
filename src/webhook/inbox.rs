//! Verified payloads kept in a `DurableLog` (the webhook inbox, the relay queue), one payload
//! per frame.
//!
//! A frame is split into chunks of at most `CHUNK` bytes: sled 0.34 writes any log item larger
//! than a quarter of a segment (a tree node holding our entry included) to a separate blob file
//! that it never fsyncs, so a 3 MB payload stored whole would not be durable after
//! `Store::commit`. Small chunks keep every node inline in the log that commit does fsync.
//!
//! Entry layout: `MAGIC, tag: u64 BE, index: u32 BE, count: u32 BE`, then for index 0
//! `sig_len: u16 BE, sig`, then the body bytes. The tag is random per frame, so chunks of
//! different frames can never be glued together. Chunks of one frame are pushed under a lock, so
//! they are adjacent in the log; a frame with chunks missing can only be the remains of a crash
//! mid-push (never answered 200) or mid-removal (already applied), and is dropped. An entry not starting with `MAGIC` is
//! taken as a whole raw JSON payload (JSON text never starts with that byte).

use std::sync::{Arc, Mutex};

use crate::store::{DurableLog, StoreError};

const MAGIC: u8 = 0xF1;
const HEADER: usize = 1 + 8 + 4 + 4;
/// sled leaf nodes split above 16 entries and the inline limit is about 1 MiB with the store's
/// 4 MiB segments: 32 KiB chunks keep a full node well under it.
pub const CHUNK: usize = 32 * 1024;
/// Entries read per sled range scan: a few first (the head is usually one small payload), then more.
const FIRST_READ: usize = 4;
const READ_BATCH: usize = 64;

/// One stored payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The `X-Hub-Signature-256` value it arrived with (absent for payloads waq wrote itself).
    pub signature: Option<String>,
    pub body: Vec<u8>,
}

/// A frame read from the log, with the entries to remove once it is handled.
#[derive(Debug)]
pub struct Stored {
    pub seqs: Vec<u64>,
    pub frame: Frame,
}

#[derive(Clone)]
pub struct FramedLog {
    log: DurableLog,
    /// Held while pushing a frame's chunks and while reading the head, so a reader never sees
    /// half a frame that is still being written.
    lock: Arc<Mutex<()>>,
}

impl FramedLog {
    pub fn new(log: DurableLog) -> FramedLog {
        FramedLog {
            log,
            lock: Arc::new(Mutex::new(())),
        }
    }

    /// Appends a frame. Durable with the next `Store::commit`.
    pub fn push(&self, signature: Option<&str>, body: &[u8]) -> Result<(), StoreError> {
        let sig = signature.unwrap_or("").as_bytes();
        let sig = &sig[..sig.len().min(u16::MAX as usize)];
        let first_room = CHUNK.saturating_sub(2 + sig.len()).max(1);
        let rest = body.len().saturating_sub(first_room);
        let count = 1 + rest.div_ceil(CHUNK);
        let count_u32 = u32::try_from(count)
            .map_err(|_| StoreError::Unavailable("payload too large to store".into()))?;

        let tag = fastrand::u64(..);
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut offset = 0;
        for index in 0..count {
            let room = if index == 0 { first_room } else { CHUNK };
            let end = (offset + room).min(body.len());
            let mut entry = Vec::with_capacity(HEADER + 2 + sig.len() + (end - offset));
            entry.push(MAGIC);
            entry.extend_from_slice(&tag.to_be_bytes());
            entry.extend_from_slice(&(index as u32).to_be_bytes());
            entry.extend_from_slice(&count_u32.to_be_bytes());
            if index == 0 {
                entry.extend_from_slice(&(sig.len() as u16).to_be_bytes());
                entry.extend_from_slice(sig);
            }
            entry.extend_from_slice(&body[offset..end]);
            self.log.push(&entry)?;
            offset = end;
        }
        Ok(())
    }

    /// The oldest complete frame, if any. Removes the remains of interrupted pushes or removals
    /// found on the way.
    pub fn first(&self) -> Result<Option<Stored>, StoreError> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut after = None;
        let mut partial: Option<Partial> = None;
        let mut limit = FIRST_READ;
        loop {
            let batch = self.log.read(after, limit)?;
            limit = READ_BATCH;
            if batch.is_empty() {
                break;
            }
            after = batch.last().map(|(seq, _)| *seq);
            for (seq, entry) in batch {
                match parse_entry(&entry) {
                    Parsed::Raw => {
                        self.drop_partial(partial.take())?;
                        return Ok(Some(Stored {
                            seqs: vec![seq],
                            frame: Frame {
                                signature: None,
                                body: entry,
                            },
                        }));
                    }
                    Parsed::First {
                        tag,
                        count,
                        sig,
                        data,
                    } => {
                        self.drop_partial(partial.take())?;
                        partial = Some(Partial {
                            seqs: vec![seq],
                            tag,
                            count,
                            signature: sig,
                            body: data.to_vec(),
                        });
                    }
                    Parsed::Next {
                        tag,
                        index,
                        count,
                        data,
                    } => match partial.as_mut() {
                        Some(p)
                            if p.tag == tag
                                && p.count == count
                                && p.seqs.len() == index as usize =>
                        {
                            p.seqs.push(seq);
                            p.body.extend_from_slice(data);
                        }
                        _ => {
                            self.drop_partial(partial.take())?;
                            tracing::warn!(seq, "dropping an orphan chunk from a durable log");
                            self.log.remove(seq)?;
                        }
                    },
                    Parsed::Garbage => {
                        self.drop_partial(partial.take())?;
                        tracing::warn!(seq, "dropping an unreadable entry from a durable log");
                        self.log.remove(seq)?;
                    }
                }
                if let Some(p) = partial.take_if(|p| p.seqs.len() == p.count as usize) {
                    return Ok(Some(Stored {
                        seqs: p.seqs,
                        frame: Frame {
                            signature: p.signature,
                            body: p.body,
                        },
                    }));
                }
            }
        }
        // Under the lock no push is in progress: a frame still incomplete here never will be.
        self.drop_partial(partial)?;
        Ok(None)
    }

    /// Removes a handled frame.
    pub fn remove(&self, stored: &Stored) -> Result<(), StoreError> {
        for seq in &stored.seqs {
            self.log.remove(*seq)?;
        }
        Ok(())
    }

    /// Entries in the log (chunks, not frames).
    pub fn entries(&self) -> usize {
        self.log.len()
    }

    fn drop_partial(&self, partial: Option<Partial>) -> Result<(), StoreError> {
        if let Some(p) = partial {
            tracing::warn!(
                chunks = p.seqs.len(),
                expected = p.count,
                "dropping an incomplete payload from a durable log (interrupted write or removal)"
            );
            for seq in p.seqs {
                self.log.remove(seq)?;
            }
        }
        Ok(())
    }
}

struct Partial {
    seqs: Vec<u64>,
    tag: u64,
    count: u32,
    signature: Option<String>,
    body: Vec<u8>,
}

enum Parsed<'a> {
    Raw,
    First {
        tag: u64,
        count: u32,
        sig: Option<String>,
        data: &'a [u8],
    },
    Next {
        tag: u64,
        index: u32,
        count: u32,
        data: &'a [u8],
    },
    Garbage,
}

fn parse_entry(entry: &[u8]) -> Parsed<'_> {
    if entry.first() != Some(&MAGIC) {
        return Parsed::Raw;
    }
    let (Some(tag), Some(index), Some(count)) =
        (be_u64(entry, 1), be_u32(entry, 9), be_u32(entry, 13))
    else {
        return Parsed::Garbage;
    };
    if count == 0 || index >= count {
        return Parsed::Garbage;
    }
    let data = &entry[HEADER..];
    if index > 0 {
        return Parsed::Next {
            tag,
            index,
            count,
            data,
        };
    }
    let Some(sig_len) = data
        .get(..2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
    else {
        return Parsed::Garbage;
    };
    let Some(sig) = data.get(2..2 + sig_len) else {
        return Parsed::Garbage;
    };
    let sig = match std::str::from_utf8(sig) {
        Ok("") => None,
        Ok(s) => Some(s.to_string()),
        Err(_) => return Parsed::Garbage,
    };
    Parsed::First {
        tag,
        count,
        sig,
        data: &data[2 + sig_len..],
    }
}

fn be_u64(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at + 8)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Some(u64::from_be_bytes(a))
}

fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn store(dir: &std::path::Path) -> Store {
        Store::open_for_test(dir)
    }

    #[test]
    fn frames_round_trip_in_order_small_and_large() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let log = FramedLog::new(s.log("t").unwrap());
        let big: Vec<u8> = (0..(3 * 1024 * 1024 + 17))
            .map(|i| (i % 251) as u8)
            .collect();
        log.push(Some("sha256=aa"), b"{\"a\":1}").unwrap();
        log.push(None, &big).unwrap();
        log.push(Some("sha256=bb"), b"").unwrap();
        assert!(log.entries() > 3);

        let a = log.first().unwrap().unwrap();
        assert_eq!(a.frame.signature.as_deref(), Some("sha256=aa"));
        assert_eq!(a.frame.body, b"{\"a\":1}");
        log.remove(&a).unwrap();
        let b = log.first().unwrap().unwrap();
        assert_eq!(b.frame.signature, None);
        assert_eq!(b.frame.body, big);
        assert!(b.seqs.len() > 90);
        log.remove(&b).unwrap();
        let c = log.first().unwrap().unwrap();
        assert_eq!(c.frame.body, b"");
        log.remove(&c).unwrap();
        assert!(log.first().unwrap().is_none());
        assert_eq!(log.entries(), 0);
    }

    #[test]
    fn raw_entries_are_whole_payloads_and_broken_frames_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let raw = s.log("t").unwrap();
        let log = FramedLog::new(raw.clone());
        // The head of a frame whose other chunks never made it (crash mid-push).
        let big = vec![b'x'; CHUNK * 2];
        log.push(None, &big).unwrap();
        let entries = raw.read(None, 10).unwrap();
        for (seq, _) in &entries[1..] {
            raw.remove(*seq).unwrap();
        }
        // A frame that lost its head (crash mid-removal): its chunks fit the count and index of
        // the lone head above, only the tag tells them apart. Then a raw JSON entry.
        log.push(None, &big).unwrap();
        let entries = raw.read(None, 10).unwrap();
        raw.remove(entries[1].0).unwrap();
        raw.push(b"{\"raw\":true}").unwrap();

        let got = log.first().unwrap().unwrap();
        assert_eq!(got.frame.body, b"{\"raw\":true}");
        assert_eq!(got.seqs.len(), 1);
        log.remove(&got).unwrap();
        assert!(log.first().unwrap().is_none());
        assert_eq!(raw.len(), 0);
    }
}
