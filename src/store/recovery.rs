//! Opening sled, including the recovery of a state directory a crash left behind.
//!
//! sled 0.34 writes a snapshot of its page table only while opening: `snap.<lsn>.generating` is
//! created, written, fsync'd and renamed to `snap.<lsn>`. Its reader takes the highest-named
//! `snap.*` file *including* `.generating` ones, and refuses to open (`Corruption`) if that file
//! is short or fails its checksum. A process killed between the create and the rename therefore
//! leaves a file that stops every later start. The snapshot is only a cache of the log: sled
//! rebuilds it by scanning the log when no snapshot file is there. So on such a failure the
//! snapshot files are moved (never deleted) to `quarantine/<time>/` and the open is retried.

use std::fs;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::config::StoreConfig;

use super::StoreError;

/// sled keeps each log item under a quarter of a segment inline; larger ones go to blob files
/// that sled 0.34 never fsyncs. 4 MiB segments keep every node of our capped records inline.
const SEGMENT_SIZE: usize = 4 * 1024 * 1024;

/// Where files set aside by recovery go, inside the state directory.
pub const QUARANTINE_DIR: &str = "quarantine";

/// sled's snapshot trailer: 8 bytes of length, then a CRC-32 of the body (both little-endian).
const SNAPSHOT_TRAILER: usize = 12;

/// How long an open waits for sled's directory lock to be released by a handle dropped in this
/// process (sled's background threads let go of it shortly after the last handle).
const LOCK_WAIT: Duration = Duration::from_secs(2);

pub fn open_sled(dir: &Path, cfg: &StoreConfig) -> Result<sled::Db, StoreError> {
    let db = open_with_recovery(dir, || open_waiting_for_lock(dir, cfg))?;
    // sled writes `conf` once, when the database is created, and never fsyncs it.
    sync_file(&dir.join("conf"))?;
    Ok(db)
}

fn sled_config(dir: &Path, cfg: &StoreConfig) -> sled::Config {
    sled::Config::new()
        .path(dir)
        .cache_capacity(cfg.cache_capacity_bytes)
        .segment_size(SEGMENT_SIZE)
        .flush_every_ms(cfg.flush_every_ms)
        .mode(sled::Mode::HighThroughput)
}

/// Why one attempt to open failed.
#[derive(Debug)]
pub(super) enum OpenFailure {
    Sled(sled::Error),
    /// sled panicked; the message of the panic.
    Panic(String),
}

impl OpenFailure {
    /// Failures that damaged files on disk can explain. I/O errors (disk full, permissions,
    /// another process holding the lock) are not: setting files aside would not help.
    fn may_be_damage(&self) -> bool {
        matches!(
            self,
            OpenFailure::Panic(_)
                | OpenFailure::Sled(sled::Error::Corruption { .. })
                | OpenFailure::Sled(sled::Error::ReportableBug(_))
                | OpenFailure::Sled(sled::Error::Unsupported(_))
        )
    }

    /// Snapshots are not involved in `Unsupported` (a settings mismatch or a torn `conf`).
    fn may_be_snapshot(&self) -> bool {
        self.may_be_damage() && !matches!(self, OpenFailure::Sled(sled::Error::Unsupported(_)))
    }
}

impl std::fmt::Display for OpenFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenFailure::Sled(e) => write!(f, "{e}"),
            OpenFailure::Panic(m) => write!(f, "sled panicked: {m}"),
        }
    }
}

impl From<OpenFailure> for StoreError {
    fn from(f: OpenFailure) -> StoreError {
        match f {
            OpenFailure::Sled(e) => StoreError::from(e),
            OpenFailure::Panic(m) => StoreError::Corrupt(format!("sled panicked: {m}")),
        }
    }
}

fn open_waiting_for_lock(dir: &Path, cfg: &StoreConfig) -> Result<sled::Db, OpenFailure> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match try_open(dir, cfg) {
            Err(OpenFailure::Sled(sled::Error::Io(e))) if is_lock_conflict(&e) => {
                if Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                // sled's text ends in the lock error's debug form (`Os { code: 11, ... }`).
                return Err(OpenFailure::Sled(sled::Error::Io(io::Error::other(
                    format!(
                    "another waq daemon (or another process) holds the lock on {}: stop it, or \
                     give this daemon a state_dir of its own",
                    dir.join("db").display()
                ),
                ))));
            }
            other => return other,
        }
    }
}

/// sled reports a held lock as an `Other` I/O error with this text (another process, or a
/// handle of this one that is still closing).
fn is_lock_conflict(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Other && e.to_string().contains("could not acquire lock")
}

thread_local! {
    /// Set on a thread while sled opens: a panic there is caught and reported as the open's
    /// error, so the panic hook does not print it (with a backtrace) on top.
    static OPENING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Wraps the process's panic hook once so that it stays quiet for a panic caught in an open.
fn quiet_panics_of_opens() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let earlier = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !OPENING.with(std::cell::Cell::get) {
                earlier(info);
            }
        }));
    });
}

fn try_open(dir: &Path, cfg: &StoreConfig) -> Result<sled::Db, OpenFailure> {
    // A fresh config each time: sled keeps state (an error, the open file) in it.
    let config = sled_config(dir, cfg);
    quiet_panics_of_opens();
    OPENING.with(|o| o.set(true));
    let opened = catch_unwind(AssertUnwindSafe(|| config.open()));
    OPENING.with(|o| o.set(false));
    match opened {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(e)) => Err(OpenFailure::Sled(e)),
        Err(payload) => Err(OpenFailure::Panic(panic_message(payload.as_ref()))),
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

/// Opens with `open`; if that fails in a way damaged files can explain, sets aside first the
/// files that fail sled's own checks, then every snapshot file, retrying after each step.
pub(super) fn open_with_recovery<T>(
    dir: &Path,
    mut open: impl FnMut() -> Result<T, OpenFailure>,
) -> Result<T, StoreError> {
    // Before sled opens it: a failed open may already have written past a cut (sled fills the
    // segment it stops in), which would hide the cut from the checks below.
    let log_len = log_len(dir)?;
    let mut open = || attempt(dir, &mut open);
    let first = match open() {
        Ok(db) => return Ok(db),
        Err(f) if !f.may_be_damage() => return Err(f.into()),
        Err(f) => f,
    };
    tracing::warn!(
        dir = %dir.display(),
        error = %first,
        "the database did not open; looking for files a crash may have left half-written"
    );
    // A log shorter than its snapshot was cut short, not torn by a crash: without the
    // snapshot, sled would rebuild what is left of it and the store would open without the
    // messages it lost, as if it had none.
    let cut = log_cut_short(dir, log_len)?.or_else(|| read_past_the_end(&first, log_len));
    if let Some(cut) = cut {
        return Err(StoreError::Corrupt(format!(
            "the database in {} cannot be opened: its log `db` is {} bytes long, but {} \
             {} bytes into it, so the log was emptied, deleted or cut short after it was \
             written (sled: {first}). Nothing was moved, as \
             opening without the snapshot would start without the messages the log lost. \
             Stop waq, keep a copy of that directory, and restore it from a backup; or move \
             it aside to start with an empty store (its messages would not be sent)",
            dir.display(),
            cut.log_len,
            cut.reference,
            cut.points_to
        )));
    }
    let mut quarantine = Quarantine::new(dir);

    let damaged = damaged_files(dir)?;
    let mut failure = first;
    if !damaged.is_empty() {
        quarantine.set_aside(&damaged)?;
        match open() {
            Ok(db) => return Ok(recovered(db, &quarantine)),
            Err(f) if !f.may_be_damage() => return Err(f.into()),
            Err(f) => failure = f,
        }
    }

    if failure.may_be_snapshot() {
        let snapshots = snapshot_files(dir)?;
        if !snapshots.is_empty() {
            tracing::warn!(
                dir = %dir.display(),
                error = %failure,
                "still not opening: setting aside every snapshot file; the snapshot is rebuilt \
                 from the log (this start takes longer)"
            );
            quarantine.set_aside(&snapshots)?;
            match open() {
                Ok(db) => return Ok(recovered(db, &quarantine)),
                Err(f) if !f.may_be_damage() => return Err(f.into()),
                Err(f) => failure = f,
            }
        }
    }

    let tried = match quarantine.moved.is_empty() {
        true => "no snapshot or settings file was damaged, so nothing was set aside".to_string(),
        false => format!(
            "{} were moved to {} (move them back to undo)",
            quarantine.moved_names(),
            quarantine.path.display()
        ),
    };
    Err(StoreError::Corrupt(format!(
        "the database in {} cannot be opened: {failure}. {tried}; the log itself is damaged. \
         Stop waq, keep a copy of that directory, and restore it from a backup; or move it \
         aside to start with an empty store (its messages would not be sent)",
        dir.display()
    )))
}

/// One call of `open`. If it fails, the snapshot files it started (`.generating`) are removed:
/// on a full disk sled leaves one empty, and the next attempt would take it for damage and set
/// it aside, a new quarantine directory every few seconds while the disk stays full. They are
/// this attempt's own unfinished output, a cache of the log.
fn attempt<T>(
    dir: &Path,
    open: &mut impl FnMut() -> Result<T, OpenFailure>,
) -> Result<T, OpenFailure> {
    let before = generating_files(dir).ok();
    let result = open();
    if let (Err(_), Some(before)) = (&result, before) {
        for path in generating_files(dir).unwrap_or_default() {
            if before.contains(&path) {
                continue;
            }
            match fs::remove_file(&path) {
                Ok(()) => tracing::debug!(
                    file = %path.display(),
                    "removed the snapshot file a failed open started"
                ),
                Err(e) => tracing::warn!(
                    file = %path.display(),
                    error = %e,
                    "cannot remove the snapshot file a failed open started"
                ),
            }
        }
    }
    result
}

fn generating_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files = snapshot_files(dir)?;
    files.retain(|p| p.to_string_lossy().ends_with(".generating"));
    Ok(files)
}

fn recovered<T>(db: T, quarantine: &Quarantine) -> T {
    tracing::warn!(
        files = %quarantine.moved_names(),
        moved_to = %quarantine.path.display(),
        "the database opened after setting aside files a crash left half-written; \
         nothing was deleted"
    );
    db
}

/// A sound snapshot pointing past the end of the log.
struct CutShort {
    /// What points past the end: "the snapshot snap.… points", "sled read".
    reference: String,
    points_to: u64,
    log_len: u64,
}

/// The first sound snapshot file that points at or past the end of the log file (sled keeps
/// the log written a segment past its tip, so a whole log is always longer).
fn log_cut_short(dir: &Path, log_len: u64) -> io::Result<Option<CutShort>> {
    for path in snapshot_files(dir)? {
        let bytes = fs::read(&path)?;
        if !snapshot_is_sound(&bytes) {
            continue;
        }
        if let Some(points_to) = sled::snapshot_log_extent(&bytes) {
            if points_to >= log_len {
                let snapshot = path.file_name().map_or_else(
                    || path.display().to_string(),
                    |n| n.to_string_lossy().into_owned(),
                );
                return Ok(Some(CutShort {
                    reference: format!("the snapshot {snapshot} points"),
                    points_to,
                    log_len,
                }));
            }
        }
    }
    Ok(None)
}

/// The length of the log file, 0 without one.
fn log_len(dir: &Path) -> io::Result<u64> {
    match fs::metadata(dir.join("db")) {
        Ok(m) => Ok(m.len()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

/// sled's open read at an offset the log file did not reach: the log was cut there. Without
/// the snapshot, sled would take the cut for a crash's torn tail and drop every segment after
/// it in the log's order, which need not be the file's (sled reuses freed segments).
fn read_past_the_end(failure: &OpenFailure, log_len: u64) -> Option<CutShort> {
    match failure {
        OpenFailure::Sled(sled::Error::Corruption { at: Some(at), .. }) if at.lid() >= log_len => {
            Some(CutShort {
                reference: "sled read".to_string(),
                points_to: at.lid(),
                log_len,
            })
        }
        _ => None,
    }
}

/// Snapshot files as sled 0.34 lists them: every name starting with `snap.` except its old
/// `.in___motion` temporaries.
fn snapshot_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && !name.ends_with(".in___motion") && entry.path().is_file() {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Files that fail the checks sled applies when it reads them: snapshot files too short or
/// whose checksum does not match, and a `conf` whose checksum does not match (torn while the
/// database was being created; sled writes a fresh one from the same settings).
fn damaged_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for path in snapshot_files(dir)? {
        if !snapshot_is_sound(&fs::read(&path)?) {
            out.push(path);
        }
    }
    let conf = dir.join("conf");
    match fs::read(&conf) {
        // sled itself rewrites a `conf` of 8 bytes or fewer.
        Ok(bytes) if bytes.len() > 8 && !trailer_crc_matches(&bytes) => out.push(conf),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok(out)
}

fn snapshot_is_sound(bytes: &[u8]) -> bool {
    if bytes.len() <= SNAPSHOT_TRAILER {
        return false;
    }
    let body = &bytes[..bytes.len() - SNAPSHOT_TRAILER];
    let crc = &bytes[bytes.len() - 4..];
    crc32(body).to_le_bytes() == crc
}

/// `conf` is the settings text followed by a CRC-32 of it.
fn trailer_crc_matches(bytes: &[u8]) -> bool {
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    crc32(body).to_le_bytes() == crc
}

/// CRC-32 (IEEE), as sled computes it. Bitwise: it runs only on recovery, over small files.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A directory under `quarantine/` named by the time of the first move.
struct Quarantine {
    state_dir: PathBuf,
    path: PathBuf,
    created: bool,
    moved: Vec<String>,
}

impl Quarantine {
    fn new(state_dir: &Path) -> Quarantine {
        let stamp = humantime::format_rfc3339_seconds(SystemTime::now())
            .to_string()
            .replace([':', '-'], "");
        Quarantine {
            state_dir: state_dir.to_path_buf(),
            path: state_dir.join(QUARANTINE_DIR).join(stamp),
            created: false,
            moved: Vec::new(),
        }
    }

    fn set_aside(&mut self, files: &[PathBuf]) -> Result<(), StoreError> {
        if !self.created {
            // Two recoveries in the same second get their own directories.
            let base = self.path.clone();
            let mut n = 1;
            while self.path.exists() {
                n += 1;
                self.path = PathBuf::from(format!("{}-{n}", base.display()));
            }
            fs::create_dir_all(&self.path)?;
            self.created = true;
        }
        for file in files {
            let Some(name) = file.file_name() else {
                continue;
            };
            if let Err(e) = fs::rename(file, self.path.join(name)) {
                if self.moved.is_empty() {
                    // Nothing was set aside: leave no empty directory behind.
                    let _ = fs::remove_dir(&self.path);
                    self.created = false;
                }
                return Err(e.into());
            }
            tracing::warn!(
                file = %file.display(),
                moved_to = %self.path.display(),
                "set aside a damaged or suspect database file"
            );
            self.moved.push(name.to_string_lossy().into_owned());
        }
        // The moves must not come undone after a power loss while sled rebuilds.
        sync_dir(&self.path)?;
        sync_dir(&self.state_dir)?;
        Ok(())
    }

    fn moved_names(&self) -> String {
        self.moved.join(", ")
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

fn sync_file(path: &Path) -> io::Result<()> {
    match fs::File::open(path) {
        Ok(f) => f.sync_all(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_reference_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn snapshot_checks() {
        let body = b"some snapshot bytes".to_vec();
        let mut file = body.clone();
        file.extend_from_slice(&(body.len() as u64).to_le_bytes());
        file.extend_from_slice(&crc32(&body).to_le_bytes());
        assert!(snapshot_is_sound(&file));
        assert!(!snapshot_is_sound(&file[..file.len() - 1]));
        assert!(!snapshot_is_sound(&[]));
        assert!(!snapshot_is_sound(&[0; 12]));
    }

    #[test]
    fn a_failure_that_persists_is_reported_as_corrupt_with_what_was_tried() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("snap.0000000000000010"), b"").unwrap();
        let mut attempts = 0;
        let err = open_with_recovery::<()>(dir.path(), || {
            attempts += 1;
            // sled may panic on a bad file as well as return an error: both are handled.
            catch_unwind(|| -> () { panic!("bad snapshot") })
                .map_err(|p| OpenFailure::Panic(panic_message(p.as_ref())))
        })
        .unwrap_err();
        assert_eq!(
            attempts, 2,
            "one open, one retry after setting the file aside"
        );
        let StoreError::Corrupt(msg) = err else {
            panic!("expected Corrupt, got {err:?}")
        };
        assert!(msg.contains("snap.0000000000000010"), "{msg}");
        assert!(msg.contains("quarantine"), "{msg}");
        assert!(msg.contains("backup"), "{msg}");
        assert!(!dir.path().join("snap.0000000000000010").exists());
    }

    #[test]
    fn a_sound_snapshot_is_set_aside_only_in_the_second_step() {
        let dir = tempfile::tempdir().unwrap();
        let body = b"a snapshot sled cannot use".to_vec();
        let mut sound = body.clone();
        sound.extend_from_slice(&(body.len() as u64).to_le_bytes());
        sound.extend_from_slice(&crc32(&body).to_le_bytes());
        let good = dir.path().join("snap.0000000000000010");
        let torn = dir.path().join("snap.0000000000000020.generating");
        std::fs::write(&good, &sound).unwrap();
        std::fs::write(&torn, &sound[..5]).unwrap();
        let mut seen = vec![];
        // Fails while any snapshot file is there, as sled does on a bad one.
        let opened = open_with_recovery(dir.path(), || {
            let left = snapshot_files(dir.path()).unwrap();
            seen.push(left.len());
            match left.is_empty() {
                true => Ok("opened"),
                false => Err(OpenFailure::Sled(sled::Error::Corruption {
                    at: None,
                    bt: (),
                })),
            }
        })
        .unwrap();
        assert_eq!(opened, "opened");
        assert_eq!(seen, vec![2, 1, 0], "torn file first, then the rest");
        let q: Vec<_> = std::fs::read_dir(dir.path().join(QUARANTINE_DIR))
            .unwrap()
            .collect();
        assert_eq!(q.len(), 1, "one directory per recovery");
        let moved = std::fs::read_dir(q[0].as_ref().unwrap().path())
            .unwrap()
            .count();
        assert_eq!(moved, 2);
    }

    /// sled opening on a full disk: it starts a snapshot file, cannot write it, and fails
    /// with the I/O error; the next open finds that empty file and reports `Corruption`.
    #[test]
    fn opens_that_fail_on_a_full_disk_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let generating = dir.path().join("snap.0000000000BD2421.generating");
        let mut like_sled_on_a_full_disk = || {
            if generating.exists() {
                return Err(OpenFailure::Sled(sled::Error::Corruption {
                    at: None,
                    bt: (),
                }));
            }
            std::fs::write(&generating, b"").unwrap();
            Err::<(), _>(OpenFailure::Sled(sled::Error::Io(
                io::Error::from_raw_os_error(libc::ENOSPC),
            )))
        };
        for _ in 0..3 {
            let err = open_with_recovery(dir.path(), &mut like_sled_on_a_full_disk).unwrap_err();
            assert!(matches!(err, StoreError::Full(_)), "{err:?}");
        }
        assert!(!generating.exists());
        assert!(!dir.path().join(QUARANTINE_DIR).exists());
    }

    #[test]
    fn io_errors_are_not_treated_as_damage() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("snap.0000000000000010"), b"").unwrap();
        let err = open_with_recovery::<()>(dir.path(), || {
            Err(OpenFailure::Sled(sled::Error::Io(
                io::Error::from_raw_os_error(libc::ENOSPC),
            )))
        })
        .unwrap_err();
        assert!(matches!(err, StoreError::Full(_)), "{err:?}");
        assert!(dir.path().join("snap.0000000000000010").exists());
        assert!(!dir.path().join(QUARANTINE_DIR).exists());
    }
}
