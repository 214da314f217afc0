//! The store surviving what sled 0.34 leaves behind: half-written snapshot files after a kill
//! during start-up, and a disk that fills up (the file size limit, in a child process).
//!
//! Child processes re-run this test binary with `WAQ_STORE_CHILD` set; `child_process` then
//! does the child's part and prints what happened as JSON lines.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use waq::config::StoreConfig;
use waq::model::{Message, Priority, State};
use waq::store::{Insert, Store, StoreError};

const CHILD_MODE: &str = "WAQ_STORE_CHILD";
const CHILD_DIR: &str = "WAQ_STORE_CHILD_DIR";

fn cfg() -> StoreConfig {
    StoreConfig {
        cache_capacity_bytes: 8 * 1024 * 1024,
        flush_every_ms: Some(500),
    }
}

fn message(store: &Store, n: u64) -> Message {
    message_with_id(store.next_id().unwrap(), n)
}

fn message_with_id(id: u64, n: u64) -> Message {
    Message {
        id,
        sender: "main".into(),
        to: format!("1415555{:04}", n % 10_000),
        kind: "text".into(),
        priority: Priority::Normal,
        state: State::Queued,
        body: format!(r#"{{"type":"text","text":{{"body":"message number {n}"}}}}"#),
        fallback_template: None,
        idempotency_key: Some(format!("key-{n}")),
        metadata: None,
        created_at_ms: 1,
        updated_at_ms: 1,
        next_attempt_at_ms: 1,
        expires_at_ms: None,
        attempts: 0,
        wamid: None,
        substituted_template: None,
        last_error: None,
        history: vec![],
    }
}

/// A database with `n` committed messages, closed. No snapshot file yet: sled 0.34 writes
/// one only while opening.
fn build(dir: &Path, n: u64) -> Vec<u64> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let store = Store::open(dir, &cfg()).unwrap();
    let mut ids = vec![];
    for i in 0..n {
        let m = message(&store, i);
        assert_eq!(store.insert_new(&m).unwrap(), Insert::Created);
        ids.push(m.id);
    }
    rt.block_on(store.commit()).unwrap();
    ids
}

/// `build`, then one more open and close, which leaves a `snap.<lsn>` file.
fn build_with_snapshot(dir: &Path, n: u64) -> (Vec<u64>, PathBuf) {
    let ids = build(dir, n);
    drop(Store::open(dir, &cfg()).unwrap());
    let snaps = snapshot_files(dir);
    assert_eq!(snaps.len(), 1, "one snapshot after a reopen: {snaps:?}");
    (ids, snaps[0].clone())
}

fn snapshot_files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("snap.")
        })
        .collect();
    out.sort();
    out
}

/// Names of the files under `quarantine/*/`.
fn quarantined(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Ok(stamps) = std::fs::read_dir(dir.join("quarantine")) else {
        return out;
    };
    for stamp in stamps {
        for f in std::fs::read_dir(stamp.unwrap().path()).unwrap() {
            out.insert(f.unwrap().file_name().to_string_lossy().into_owned());
        }
    }
    out
}

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

/// Opens through `Store::open` and checks that exactly `ids` are stored, all decodable.
fn assert_all_there(dir: &Path, ids: &[u64]) -> Store {
    let store = Store::open(dir, &cfg()).expect("the store opens");
    let mut pending = vec![];
    let total = store.recover(|m| pending.push(m.id)).unwrap();
    assert_eq!(total, ids.len() as u64);
    assert_eq!(pending, ids, "every message is back, in order");
    for id in ids {
        assert!(store.get(*id).unwrap().is_some(), "message {id}");
    }
    store
}

/// The same settings the store gives sled, to show what sled alone makes of a directory.
fn plain_sled_open(dir: &Path) -> Result<(), String> {
    sled::Config::new()
        .path(dir)
        .segment_size(4 * 1024 * 1024)
        .open()
        .map(drop)
        .map_err(|e| format!("{e:?}"))
}

fn higher_lsn_name(snap: &Path, suffix: &str) -> String {
    let name = name(snap);
    let hex = name
        .trim_start_matches("snap.")
        .trim_end_matches(".generating");
    let lsn = u64::from_str_radix(hex, 16).unwrap();
    format!("snap.{:016X}{suffix}", lsn + 4096)
}

/// A log cut short after its snapshot was written (emptied, deleted, truncated) is refused,
/// with nothing moved: without the snapshot, sled would rebuild from what is left of the log
/// and the store would open without the messages the log lost.
#[test]
fn a_log_cut_short_is_refused_not_opened_without_its_messages() {
    /// Cuts the log at this path, of this length.
    type Cut = fn(&Path, u64);
    let cuts: [(&str, Cut); 3] = [
        ("emptied", |db, _| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(db)
                .unwrap()
                .set_len(0)
                .unwrap()
        }),
        ("deleted", |db, _| std::fs::remove_file(db).unwrap()),
        ("cut to its first segment", |db, len| {
            assert!(
                len > 8 * 1024 * 1024,
                "the log spans several segments: {len}"
            );
            std::fs::OpenOptions::new()
                .write(true)
                .open(db)
                .unwrap()
                .set_len(4 * 1024 * 1024)
                .unwrap()
        }),
    ];
    let tmp = tempfile::tempdir().unwrap();
    let whole = tmp.path().join("whole");
    let (_, snap) = build_with_snapshot(&whole, 30_000);
    for (what, cut) in cuts {
        let dir = tmp.path().join(what.replace(' ', "_"));
        std::fs::create_dir(&dir).unwrap();
        for f in std::fs::read_dir(&whole).unwrap() {
            let f = f.unwrap();
            if f.file_type().unwrap().is_file() {
                std::fs::copy(f.path(), dir.join(f.file_name())).unwrap();
            }
        }
        let db = dir.join("db");
        let len = std::fs::metadata(&db).unwrap().len();
        cut(&db, len);
        let err = Store::open(&dir, &cfg())
            .err()
            .unwrap_or_else(|| panic!("a log {what} opened"));
        let StoreError::Corrupt(msg) = &err else {
            panic!("{what}: expected Corrupt, got {err:?}")
        };
        assert!(msg.contains("cut short"), "{what}: {msg}");
        assert!(msg.contains(&name(&snap)), "{what}: {msg}");
        assert!(quarantined(&dir).is_empty(), "{what}: nothing is moved");
        assert_eq!(snapshot_files(&dir), vec![dir.join(name(&snap))], "{what}");
    }
}

/// The daemon refusing a log cut in its third segment (where sled panics while opening: a
/// snapshot's page lies past the end) says why in one message, without the panic and its
/// backtrace printed on top.
#[test]
fn the_daemon_refuses_a_cut_log_without_printing_sleds_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    build_with_snapshot(&state, 30_000);
    let db = state.join("db");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&db)
        .unwrap()
        .set_len(8_400_000)
        .unwrap();
    let config = tmp.path().join("waq.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {:?}\n[socket]\npath = {:?}\n[[senders]]\nname = \"main\"\n\
             phone_number_id = \"120000000000001\"\ntoken = \"t\"\n",
            state,
            tmp.path().join("waq.sock")
        ),
    )
    .unwrap();
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_waq"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A daemon that opened the cut store would serve until stopped.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = daemon.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = daemon.kill();
            let mut err = String::new();
            std::io::Read::read_to_string(&mut daemon.stderr.take().unwrap(), &mut err).unwrap();
            panic!("the daemon opened a cut log: {err}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut daemon.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("cut short"), "{err}");
    assert!(!err.contains("panicked at"), "{err}");
    assert!(!err.contains("stack backtrace"), "{err}");
}

#[test]
fn a_truncated_snapshot_is_set_aside_and_rebuilt_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (ids, snap) = build_with_snapshot(dir.path(), 300);
    let bytes = std::fs::read(&snap).unwrap();
    std::fs::write(&snap, &bytes[..bytes.len() / 2]).unwrap();
    assert!(
        plain_sled_open(dir.path()).is_err(),
        "sled alone refuses it"
    );

    let store = assert_all_there(dir.path(), &ids);
    assert_eq!(quarantined(dir.path()), BTreeSet::from([name(&snap)]));
    // The store writes on: the rebuilt database is a working one.
    let m = message(&store, 1_000);
    assert_eq!(store.insert_new(&m).unwrap(), Insert::Created);
}

#[test]
fn a_zero_length_snapshot_is_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    let (ids, snap) = build_with_snapshot(dir.path(), 300);
    std::fs::write(&snap, b"").unwrap();
    assert!(plain_sled_open(dir.path()).is_err());

    assert_all_there(dir.path(), &ids);
    assert_eq!(quarantined(dir.path()), BTreeSet::from([name(&snap)]));
}

/// What a kill during start-up leaves: a `.generating` file with a higher lsn than the last
/// good snapshot, cut short. sled picks it (it sorts last) and fails; the good one is kept.
#[test]
fn a_half_written_generating_file_is_set_aside_and_the_good_snapshot_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (ids, snap) = build_with_snapshot(dir.path(), 300);
    let bytes = std::fs::read(&snap).unwrap();
    let generating = dir.path().join(higher_lsn_name(&snap, ".generating"));
    std::fs::write(&generating, &bytes[..bytes.len() / 3]).unwrap();
    let empty = dir.path().join(higher_lsn_name(&generating, ".generating"));
    std::fs::write(&empty, b"").unwrap();
    assert!(plain_sled_open(dir.path()).is_err());

    assert_all_there(dir.path(), &ids);
    assert_eq!(
        quarantined(dir.path()),
        BTreeSet::from([name(&generating), name(&empty)])
    );
    assert!(snap.exists(), "the good snapshot stays in use");
}

#[test]
fn a_torn_settings_file_is_set_aside_and_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let ids = build(dir.path(), 50);
    let conf = dir.path().join("conf");
    let bytes = std::fs::read(&conf).unwrap();
    std::fs::write(&conf, &bytes[..30]).unwrap();
    assert!(plain_sled_open(dir.path()).is_err());

    assert_all_there(dir.path(), &ids);
    assert!(quarantined(dir.path()).contains("conf"));
    assert!(
        std::fs::read(&conf).unwrap().len() > 30,
        "sled wrote it anew"
    );
}

// ---- child processes ----------------------------------------------------------------------

/// The child's side of the tests below; does nothing in a normal run.
#[test]
fn child_process() {
    let (Ok(mode), Ok(dir)) = (std::env::var(CHILD_MODE), std::env::var(CHILD_DIR)) else {
        return;
    };
    let dir = PathBuf::from(dir);
    match mode.as_str() {
        "open" => drop(Store::open(&dir, &cfg()).unwrap()),
        "fill" => fill_until_full(&dir),
        other => panic!("unknown child mode {other}"),
    }
}

fn child(mode: &str, dir: &Path) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "child_process",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_MODE, mode)
    .env(CHILD_DIR, dir)
    .stdin(Stdio::null());
    cmd
}

/// Pins the calling thread (and so the children it spawns) to its first allowed CPU; returns
/// the previous mask.
fn pin_to_one_cpu() -> libc::cpu_set_t {
    unsafe {
        let size = std::mem::size_of::<libc::cpu_set_t>();
        let mut old: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(libc::sched_getaffinity(0, size, &mut old), 0);
        let first = (0..libc::CPU_SETSIZE as usize)
            .find(|&c| libc::CPU_ISSET(c, &old))
            .unwrap();
        let mut one: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(first, &mut one);
        assert_eq!(libc::sched_setaffinity(0, size, &one), 0);
        old
    }
}

fn restore_cpus(mask: &libc::cpu_set_t) {
    unsafe {
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), mask);
    }
}

/// Starts a child that opens the store and kills it the moment sled creates its
/// `.generating` snapshot file. Child and parent share one CPU, so the parent, woken by
/// inotify, runs before the child writes a byte. Returns whether a `.generating` file was seen.
fn kill_while_snapshotting(dir: &Path) -> bool {
    let mask = pin_to_one_cpu();
    let seen = unsafe {
        let fd = libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK);
        assert!(fd >= 0);
        let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
        assert!(libc::inotify_add_watch(fd, path.as_ptr(), libc::IN_CREATE) >= 0);
        let mut proc = child("open", dir).stdout(Stdio::null()).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = false;
        let mut buf = [0u8; 4096];
        while !seen && Instant::now() < deadline {
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            if libc::poll(&mut pfd, 1, 50) > 0 {
                let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
                if n > 0 && String::from_utf8_lossy(&buf[..n as usize]).contains(".generating") {
                    libc::kill(proc.id() as i32, libc::SIGKILL);
                    seen = true;
                }
            } else if proc.try_wait().unwrap().is_some() {
                break;
            }
        }
        if !seen {
            let _ = proc.kill();
        }
        let _ = proc.wait();
        libc::close(fd);
        seen
    };
    restore_cpus(&mask);
    seen
}

/// The real thing: a start-up killed while sled writes its snapshot leaves a `.generating`
/// file that makes every later open fail, until the store sets it aside. Landing the kill
/// inside that write takes luck on a busy machine, so it is tried until it lands once (at most
/// 20 times, a minute); every attempt, landed or not, must find all the data. The state the
/// kill leaves is also built by hand in `a_half_written_generating_file_is_...`, which does not
/// depend on timing.
#[test]
fn a_start_up_killed_while_writing_the_snapshot_is_recovered() {
    let started = Instant::now();
    let (mut attempts, mut reproduced) = (0, 0);
    while reproduced == 0 && attempts < 20 && started.elapsed() < Duration::from_secs(60) {
        attempts += 1;
        let dir = tempfile::tempdir().unwrap();
        let ids = build(dir.path(), 2_000);
        assert!(snapshot_files(dir.path()).is_empty());
        if !kill_while_snapshotting(dir.path()) {
            continue;
        }
        let left = snapshot_files(dir.path());
        if plain_sled_open(dir.path()).is_ok() {
            // Killed after the file was complete: nothing broken this time.
            assert_all_there(dir.path(), &ids);
            continue;
        }
        reproduced += 1;
        assert!(
            left.iter().any(|p| name(p).ends_with(".generating")),
            "what the kill left: {left:?}"
        );
        assert_all_there(dir.path(), &ids);
        let q = quarantined(dir.path());
        assert!(q.iter().any(|n| n.ends_with(".generating")), "{q:?}");
    }
    eprintln!(
        "kills inside sled's snapshot write: {reproduced} broken store(s) recovered in {attempts} attempt(s)"
    );
}

// ---- disk full ----------------------------------------------------------------------------

fn emit(v: Value) {
    println!("{v}");
}

fn kind(e: &StoreError) -> &'static str {
    match e {
        StoreError::Full(_) => "full",
        StoreError::Unavailable(_) => "unavailable",
        StoreError::Corrupt(_) => "corrupt",
        StoreError::NewerFormat(_) => "newer_format",
    }
}

fn set_file_size_limit(soft: libc::rlim_t) {
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut r), 0);
        r.rlim_cur = soft.min(r.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &r), 0);
    }
}

/// Child: enqueues in committed batches under a file size limit until the store says Full,
/// checks it keeps saying so, lifts the limit, and enqueues again once the store has healed.
fn fill_until_full(dir: &Path) {
    // Without this the first write past the limit kills the process instead of failing.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = Store::open(dir, &cfg()).unwrap();
    // A log handle taken before the failure must keep working after the reopen.
    let relay = store.log("relay").unwrap();
    relay.push(b"before").unwrap();
    rt.block_on(store.commit()).unwrap();
    let size = std::fs::metadata(dir.join("db")).unwrap().len();
    set_file_size_limit((size + 64 * 1024) as libc::rlim_t);
    emit(json!({"event": "limited", "db_bytes": size}));

    let started = Instant::now();
    // Idempotency keys apart from the parent's, so every insert creates a message.
    let mut n = 1_000_000u64;
    let mut acked = vec![];
    'fill: loop {
        if started.elapsed() > Duration::from_secs(15) {
            emit(json!({"event": "never_full"}));
            return;
        }
        let mut batch = vec![];
        for _ in 0..20 {
            n += 1;
            let m = match store.next_id() {
                Ok(id) => message_with_id(id, n),
                Err(e) => {
                    emit(
                        json!({"event": "failed", "during": "next_id", "error": kind(&e), "message": e.to_string()}),
                    );
                    break 'fill;
                }
            };
            match store.insert_new(&m) {
                Ok(created) => {
                    assert_eq!(created, Insert::Created);
                    batch.push(m.id)
                }
                Err(e) => {
                    emit(
                        json!({"event": "failed", "during": "insert", "error": kind(&e), "message": e.to_string()}),
                    );
                    break 'fill;
                }
            }
        }
        match rt.block_on(store.commit()) {
            Ok(()) => {
                acked.extend(&batch);
                emit(json!({"event": "committed", "ids": batch}))
            }
            Err(e) => {
                emit(
                    json!({"event": "failed", "during": "commit", "error": kind(&e), "message": e.to_string(), "ids": batch}),
                );
                break;
            }
        }
    }

    // Still full: later callers get an error at once, not a hang or a panic.
    let later_insert = store.insert_new(&message_with_id(u64::MAX - 1, u64::MAX - 1));
    let later_commit = rt.block_on(store.commit());
    emit(json!({
        "event": "still_full",
        "insert": later_insert.as_ref().err().map(kind),
        "commit": later_commit.as_ref().err().map(kind),
    }));

    set_file_size_limit(libc::RLIM_INFINITY);
    let lifted = Instant::now();
    loop {
        if lifted.elapsed() > Duration::from_secs(10) {
            emit(json!({"event": "never_healed", "open": store.is_open()}));
            return;
        }
        n += 1;
        let attempt = store.next_id().and_then(|id| {
            let m = message_with_id(id, n);
            store.insert_new(&m).map(|created| {
                assert_eq!(created, Insert::Created);
                m.id
            })
        });
        if let Ok(id) = attempt {
            if rt.block_on(store.commit()).is_ok() {
                let missing: Vec<u64> = acked
                    .iter()
                    .copied()
                    .filter(|id| !matches!(store.get(*id), Ok(Some(_))))
                    .collect();
                emit(
                    json!({"event": "healed", "ids": [id], "generation": store.generation(), "after_ms": lifted.elapsed().as_millis() as u64, "acked": acked.len(), "missing": missing.len(), "first_missing": missing.first()}),
                );
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut batch = vec![];
    for _ in 0..20 {
        n += 1;
        let m = message(&store, n);
        assert_eq!(store.insert_new(&m).unwrap(), Insert::Created);
        batch.push(m.id);
    }
    rt.block_on(store.commit()).unwrap();
    emit(json!({"event": "committed", "ids": batch}));
    emit(json!({"event": "done"}));
}

#[test]
fn a_full_disk_answers_full_loses_nothing_committed_and_heals_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), 100);
    let started = Instant::now();
    let mut proc = child("fill", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read while the child runs: one event per committed batch can exceed a pipe's buffer,
    // and a child blocked writing to a full pipe would look hung.
    let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(proc.stdout.take().unwrap()));
    let stderr = drain(Box::new(proc.stderr.take().unwrap()));
    // Bounded: the child gives up on its own after 25 s; this is the backstop.
    let status = loop {
        if let Some(s) = proc.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = proc.kill();
            panic!("the child hung");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = stdout.join().unwrap();
    let stderr = stderr.join().unwrap();
    let events: Vec<Value> = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let report = format!("status {status:?}\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        status.success(),
        "the child neither panicked nor died: {report}"
    );

    let of = |name: &'static str| events.iter().filter(move |e| e["event"] == name);
    let failed: Vec<_> = of("failed").collect();
    assert_eq!(failed.len(), 1, "{report}");
    assert_eq!(failed[0]["error"], "full", "{report}");
    let still = of("still_full").next().expect(&report);
    assert_eq!(still["insert"], "full", "{report}");
    assert_eq!(still["commit"], "full", "{report}");
    let healed = of("healed").next().expect(&report);
    assert!(healed["generation"].as_u64().unwrap() >= 1, "{report}");
    assert_eq!(
        healed["missing"], 0,
        "nothing acknowledged lost in the reopen: {report}"
    );
    assert!(of("done").next().is_some(), "{report}");

    // Every message acknowledged (committed) before or after the failure is there.
    let acked: BTreeSet<u64> = of("committed")
        .chain(of("healed"))
        .flat_map(|e| e["ids"].as_array().unwrap().clone())
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert!(acked.len() > 100, "{report}");
    let store = Store::open(dir.path(), &cfg()).expect("the database opens");
    let total = store.recover(|_| {}).expect("every record decodes");
    for id in &acked {
        assert!(
            store.get(*id).unwrap().is_some(),
            "acknowledged {id} lost: {report}"
        );
    }
    assert!(total >= 100 + acked.len() as u64);
}

/// A small tmpfs mounted for one test, unmounted when dropped.
struct SmallFs(PathBuf);

impl SmallFs {
    /// `None` where mounting is not permitted (not root, or no CAP_SYS_ADMIN).
    fn mount(at: &Path, size: &str) -> Option<SmallFs> {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        std::fs::create_dir_all(at).unwrap();
        let target = CString::new(at.as_os_str().as_bytes()).unwrap();
        let options = CString::new(format!("size={size}")).unwrap();
        let rc = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                options.as_ptr().cast(),
            )
        };
        (rc == 0).then(|| SmallFs(at.to_path_buf()))
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        use std::os::unix::ffi::OsStrExt;
        let target = std::ffi::CString::new(self.0.as_os_str().as_bytes()).unwrap();
        unsafe {
            libc::umount2(target.as_ptr(), libc::MNT_DETACH);
        }
    }
}

/// Writes to `path` until the filesystem has no room left.
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0xA5u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    // The last pages may take less than a chunk.
    while f.write_all(&chunk[..512]).is_ok() {}
}

/// On a full disk sled starts its snapshot file and cannot write it. That open fails with
/// `Full`; the next must not take the file left behind for damage and set it aside, which
/// would add a quarantine directory each time the store retries.
#[test]
fn opens_on_a_full_disk_leave_no_snapshot_file_and_no_quarantine() {
    let root = tempfile::tempdir().unwrap();
    let Some(fs) = SmallFs::mount(&root.path().join("small"), "24m") else {
        eprintln!(
            "full disk at open: skipped, mounting a tmpfs is not permitted here (needs root)"
        );
        return;
    };
    let dir = fs.0.join("state");
    let ids = build(&dir, 300);
    fill(&fs.0.join("filler"));
    for attempt in 1..=3 {
        match Store::open(&dir, &cfg()) {
            Err(StoreError::Full(_)) => {}
            Err(e) => panic!("attempt {attempt}: {e}"),
            Ok(_) => panic!("attempt {attempt}: opened on a full disk"),
        }
    }
    let left: Vec<String> = snapshot_files(&dir).iter().map(|p| name(p)).collect();
    assert!(!left.iter().any(|n| n.ends_with(".generating")), "{left:?}");
    assert!(
        !dir.join("quarantine").exists(),
        "quarantined {:?}",
        quarantined(&dir)
    );
    std::fs::remove_file(fs.0.join("filler")).unwrap();
    drop(assert_all_there(&dir, &ids));
}
