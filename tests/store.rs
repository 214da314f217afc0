//! The store on real sled in temp dirs: durability across reopen, group commit under
//! concurrency, idempotency keys, windows, counts.

use std::sync::Arc;

use waq::config::StoreConfig;
use waq::model::{Message, Priority, State};
use waq::store::{Insert, Store};

fn cfg() -> StoreConfig {
    StoreConfig {
        cache_capacity_bytes: 8 * 1024 * 1024,
        flush_every_ms: Some(500),
    }
}

fn message(store: &Store, to: &str, key: Option<&str>) -> Message {
    let id = store.next_id().unwrap();
    Message {
        id,
        sender: "main".into(),
        to: to.into(),
        kind: "text".into(),
        priority: Priority::Normal,
        state: State::Queued,
        body: r#"{"type":"text","text":{"body":"hello"}}"#.into(),
        fallback_template: None,
        idempotency_key: key.map(str::to_string),
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

#[tokio::test]
async fn committed_messages_survive_reopen_with_their_state() {
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<u64> = {
        let store = Store::open(dir.path(), &cfg()).unwrap();
        let mut ids = vec![];
        for i in 0..50 {
            let m = message(&store, &format!("1415555{i:04}"), None);
            assert_eq!(store.insert_new(&m).unwrap(), Insert::Created);
            ids.push(m.id);
        }
        store
            .update(ids[3], |m| {
                m.transition(State::Cancelled, 2, "cancelled");
                Some(())
            })
            .unwrap()
            .unwrap();
        store.commit().await.unwrap();
        ids
    };
    let store = Store::open(dir.path(), &cfg()).unwrap();
    let mut pending = vec![];
    let total = store.recover(|m| pending.push(m.id)).unwrap();
    assert_eq!(total, 50);
    assert_eq!(
        pending.len(),
        49,
        "the cancelled one is not handed to the dispatcher"
    );
    assert_eq!(store.get(ids[3]).unwrap().unwrap().state, State::Cancelled);
    let counts: std::collections::HashMap<_, _> = store.counts().into_iter().collect();
    assert_eq!(counts[&State::Queued], 49);
    assert_eq!(counts[&State::Cancelled], 1);
    // Ids keep growing after a restart.
    assert!(store.next_id().unwrap() > *ids.iter().max().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commits_share_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), &cfg()).unwrap());
    let mut tasks = vec![];
    for t in 0..64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                let m = message(&store, &format!("1415{t:03}{i:04}"), None);
                store.insert_new(&m).unwrap();
                store.commit().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let stats = store.commit_stats();
    let commits = stats.commits.load(std::sync::atomic::Ordering::Relaxed);
    let waiters = stats.waiters.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(waiters, 64 * 20);
    assert!(
        commits < waiters,
        "group commit must batch: {commits} flushes for {waiters} commits"
    );
}

/// Enqueues without a key hand their records to the commit thread, which writes each
/// commit's records together: every one is there after a reopen, counted once, and the
/// writes were shared (fewer commits than records).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn records_written_by_the_commit_thread_are_durable_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = Vec::new();
    {
        let store = Arc::new(Store::open(dir.path(), &cfg()).unwrap());
        let mut tasks = vec![];
        for t in 0..64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut written = Vec::new();
                for i in 0..20 {
                    let m = message(&store, &format!("1415{t:03}{i:04}"), None);
                    store
                        .insert_new_durably(&m, store.generation())
                        .await
                        .unwrap();
                    // Readable as soon as it is durable.
                    assert_eq!(store.get(m.id).unwrap().unwrap().to, m.to);
                    written.push((m.id, m.to));
                }
                written
            }));
        }
        for t in tasks {
            expected.extend(t.await.unwrap());
        }
        let counts = store.counts();
        assert!(counts.contains(&(State::Queued, 64 * 20)), "{counts:?}");
        let stats = store.commit_stats();
        let commits = stats.commits.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            commits < 64 * 20,
            "{commits} commits for {} records",
            64 * 20
        );
        // Not durable in a database reopened since the generation given: refused.
        let m = message(&store, "14150000001", None);
        let err = store
            .insert_new_durably(&m, store.generation() + 1)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("reopened"), "{err}");
        assert!(
            store.get(m.id).unwrap().is_none(),
            "the refused record stays"
        );
    }
    let store = Store::open(dir.path(), &cfg()).unwrap();
    let mut recovered = 0;
    store.recover(|_| recovered += 1).unwrap();
    assert_eq!(recovered, expected.len());
    for (id, to) in expected {
        assert_eq!(store.get(id).unwrap().unwrap().to, to, "message {id}");
    }
}

#[tokio::test]
async fn idempotency_key_returns_the_first_message() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &cfg()).unwrap();
    let first = message(&store, "14155550000", Some("order-1"));
    assert_eq!(store.insert_new(&first).unwrap(), Insert::Created);
    let again = message(&store, "14155550000", Some("order-1"));
    assert_eq!(
        store.insert_new(&again).unwrap(),
        Insert::Duplicate(first.id)
    );
    assert!(store.get(again.id).unwrap().is_none());
    // Once the first is gone (retention), the key is free again.
    store.remove(&first).unwrap();
    assert_eq!(store.insert_new(&again).unwrap(), Insert::Created);
}

#[tokio::test]
async fn retention_removes_only_the_record_it_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &cfg()).unwrap();
    let mut m = message(&store, "14155550000", Some("k"));
    m.state = State::Failed;
    store.insert_new(&m).unwrap();
    // A retry lands between retention's read and its removal.
    let (_, retried) = store
        .update(m.id, |m| {
            m.transition(State::Queued, 5, "retry requested");
            Some(())
        })
        .unwrap()
        .unwrap();
    assert!(!store.remove_unchanged(&m).unwrap());
    assert_eq!(store.get(m.id).unwrap().unwrap().state, State::Queued);
    assert!(store.remove_unchanged(&retried).unwrap());
    assert!(store.get(m.id).unwrap().is_none());
}

#[test]
fn concurrent_requests_with_one_key_store_one_message() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &cfg()).unwrap();
    for round in 0..200 {
        let key = format!("retry-{round}");
        let start = Arc::new(std::sync::Barrier::new(8));
        let outcomes: Vec<Insert> = (0..8)
            .map(|_| {
                let (store, start, key) = (store.clone(), start.clone(), key.clone());
                std::thread::spawn(move || {
                    let m = message(&store, "14155550000", Some(&key));
                    start.wait();
                    store.insert_new(&m).unwrap()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        let created = outcomes.iter().filter(|o| **o == Insert::Created).count();
        assert_eq!(created, 1, "round {round}: {outcomes:?}");
    }
}

#[tokio::test]
async fn windows_never_move_backwards_and_wamids_map_to_ids() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &cfg()).unwrap();
    assert_eq!(store.last_inbound("main", "1415").unwrap(), None);
    assert_eq!(store.record_inbound("main", "1415", 5_000).unwrap(), 5_000);
    assert_eq!(store.record_inbound("main", "1415", 4_000).unwrap(), 5_000);
    assert_eq!(store.last_inbound("main", "1415").unwrap(), Some(5_000));
    assert_eq!(store.last_inbound("other", "1415").unwrap(), None);
    store.set_wamid("wamid.abc", 42).unwrap();
    assert_eq!(store.lookup_wamid("wamid.abc").unwrap(), Some(42));
    assert_eq!(store.lookup_wamid("wamid.zzz").unwrap(), None);
}

#[tokio::test]
async fn wa_id_aliases_survive_reopen_and_open_the_dialled_numbers_windows() {
    // Brazil: dialled with the ninth digit, known to WhatsApp by the 12-digit wa_id.
    let (dialled, wa_id) = ("5511987654321", "551187654321");
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), &cfg()).unwrap();
        // The usual case: the wa_id is the number dialled, and nothing is recorded.
        assert!(!store
            .learn_wa_id("main", "14155550100", "14155550100")
            .unwrap());
        assert!(store
            .dialled_numbers("main", "14155550100")
            .unwrap()
            .is_empty());
        assert!(store.learn_wa_id("main", dialled, wa_id).unwrap());
        // Every later send answers the same: already known.
        assert!(!store.learn_wa_id("main", dialled, wa_id).unwrap());
        store.commit().await.unwrap();
    }
    let store = Store::open(dir.path(), &cfg()).unwrap();
    assert_eq!(store.dialled_numbers("main", wa_id).unwrap(), vec![dialled]);
    assert_eq!(
        store.dialled_numbers("main", &format!("+{wa_id}")).unwrap(),
        vec![dialled]
    );
    assert!(store.dialled_numbers("other", wa_id).unwrap().is_empty());
    assert!(store.dialled_numbers("main", dialled).unwrap().is_empty());

    // An inbound from the wa_id opens its window and the dialled number's.
    assert_eq!(store.record_inbound("main", wa_id, 5_000).unwrap(), 5_000);
    assert_eq!(store.last_inbound("main", dialled).unwrap(), Some(5_000));
    assert_eq!(store.last_inbound("other", dialled).unwrap(), None);
    // Never backwards, for either of them.
    store.record_inbound("main", dialled, 9_000).unwrap();
    assert_eq!(store.record_inbound("main", wa_id, 7_000).unwrap(), 7_000);
    assert_eq!(store.last_inbound("main", dialled).unwrap(), Some(9_000));
    // 131047 for a message sent at 8 s: the windows older than that send are forgotten.
    assert!(store.close_window("main", wa_id, 8_000).unwrap());
    assert_eq!(store.last_inbound("main", wa_id).unwrap(), None);
    assert_eq!(store.last_inbound("main", dialled).unwrap(), Some(9_000));
    assert!(store.close_window("main", wa_id, 9_500).unwrap());
    assert_eq!(store.last_inbound("main", dialled).unwrap(), None);

    // A reply from the wa_id before the first send: learning the alias carries it over.
    store
        .record_inbound("main", "5215512345678", 4_000)
        .unwrap();
    assert!(store
        .learn_wa_id("main", "525512345678", "5215512345678")
        .unwrap());
    assert_eq!(
        store.last_inbound("main", "525512345678").unwrap(),
        Some(4_000)
    );
}

#[tokio::test]
async fn durable_log_keeps_order_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), &cfg()).unwrap();
        let log = store.log("relay").unwrap();
        let a = log.push(b"first").unwrap();
        log.push(b"second").unwrap();
        log.remove(a).unwrap();
        log.push(b"third").unwrap();
        store.commit().await.unwrap();
    }
    let store = Store::open(dir.path(), &cfg()).unwrap();
    let entries: Vec<Vec<u8>> = store
        .log("relay")
        .unwrap()
        .read(None, 10)
        .unwrap()
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(entries, vec![b"second".to_vec(), b"third".to_vec()]);
}

/// A batch is kept whole or not at all: the messages of a batch that was written and committed
/// but never finished (the daemon died before answering) are taken back at the next opening;
/// a finished batch stays, and so do messages written beside it.
#[tokio::test]
async fn an_unfinished_batch_is_taken_back_whole_at_the_next_opening() {
    let dir = tempfile::tempdir().unwrap();
    let (outside, unfinished, finished) = {
        let store = Store::open(dir.path(), &cfg()).unwrap();
        let outside = message(&store, "14150000001", None);
        store.insert_new(&outside).unwrap();

        // 1,300 ids: more than one record of ids.
        let batch: Vec<Message> = (0..1300)
            .map(|i| message(&store, &format!("1416{i:07}"), Some(&format!("k{i}"))))
            .collect();
        let ids: Vec<u64> = batch.iter().map(|m| m.id).collect();
        let _mark = store.begin_batch(&ids).unwrap();
        for m in &batch {
            assert_eq!(store.insert_new(m).unwrap(), Insert::Created);
        }
        store.commit().await.unwrap();

        let done: Vec<Message> = (0..10)
            .map(|i| message(&store, &format!("1417{i:07}"), None))
            .collect();
        let done_ids: Vec<u64> = done.iter().map(|m| m.id).collect();
        let mark = store.begin_batch(&done_ids).unwrap();
        for m in &done {
            store.insert_new(m).unwrap();
        }
        store.commit().await.unwrap();
        store.end_batch(mark).unwrap();
        store.commit().await.unwrap();
        assert_eq!(store.unfinished_batches().unwrap(), 3);
        (outside.id, ids, done_ids)
    };
    let store = Store::open(dir.path(), &cfg()).unwrap();
    let total = store.recover(|_| {}).unwrap();
    assert_eq!(total, 11, "the outside message and the finished batch");
    assert_eq!(store.unfinished_batches().unwrap(), 0);
    assert!(store.get(outside).unwrap().is_some());
    for id in &finished {
        assert!(store.get(*id).unwrap().is_some());
    }
    for id in &unfinished {
        assert!(
            store.get(*id).unwrap().is_none(),
            "{id} of the unfinished batch"
        );
    }
    // Their idempotency keys are free again: the client's retry is stored, not a duplicate.
    let retry = message(&store, "14160000000", Some("k0"));
    assert_eq!(store.insert_new(&retry).unwrap(), Insert::Created);
}

#[tokio::test]
async fn pruning_windows_forgets_only_old_ones_a_slice_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &cfg()).unwrap();
    // Five recipients, two of them recent.
    for (to, at) in [
        ("11", 100),
        ("12", 9_000),
        ("13", 200),
        ("14", 300),
        ("15", 9_500),
    ] {
        store.record_inbound("main", to, at).unwrap();
    }
    let mut cursor: Option<Vec<u8>> = None;
    let mut removed = 0;
    let mut passes = 0;
    loop {
        let pass = store.prune_windows(1_000, cursor.as_deref(), 2).unwrap();
        removed += pass.removed;
        passes += 1;
        cursor = pass.next;
        if cursor.is_none() {
            break;
        }
        assert!(passes < 10, "the cursor never came back to the start");
    }
    assert_eq!(removed, 3);
    assert_eq!(passes, 3, "five entries, two a pass");
    for (to, kept) in [
        ("11", false),
        ("12", true),
        ("13", false),
        ("14", false),
        ("15", true),
    ] {
        assert_eq!(
            store.last_inbound("main", to).unwrap().is_some(),
            kept,
            "{to}"
        );
    }
    // Durable with the next commit, like every other write.
    store.commit().await.unwrap();
    drop(store);
    let store = Store::open(dir.path(), &cfg()).unwrap();
    assert_eq!(store.last_inbound("main", "11").unwrap(), None);
    assert_eq!(store.last_inbound("main", "12").unwrap(), Some(9_000));
    // A recipient who writes again has a window again.
    assert_eq!(store.record_inbound("main", "11", 10_000).unwrap(), 10_000);
}

/// After the store reopens itself (a full disk, say), the dispatcher submits every pending
/// message again. Messages parked for later must still count once in their sender's
/// `queued`, with or without a ttl, and so must those already due.
#[tokio::test]
async fn a_resync_after_a_reopen_counts_each_message_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = waq::config::Config::from_toml(
        &format!(
            "state_dir = \"{0}\"\n[socket]\npath = \"{0}/waq.sock\"\n[[senders]]\nname = \"main\"\nphone_number_id = \"120000000000001\"\ntoken = \"t\"\n",
            dir.path().display()
        ),
        dir.path(),
    )
    .unwrap();
    let store = Store::open(&dir.path().join("state"), &cfg()).unwrap();
    let dispatcher = waq::dispatch::Dispatcher::new(&config).unwrap();
    let later = waq::model::now_ms() + 3_600_000;
    let mut parked = message(&store, "14155550101", None);
    parked.next_attempt_at_ms = later;
    let mut parked_with_ttl = message(&store, "14155550102", None);
    parked_with_ttl.next_attempt_at_ms = later;
    parked_with_ttl.expires_at_ms = Some(later + 60_000);
    let due = message(&store, "14155550103", None);
    for m in [&parked, &parked_with_ttl, &due] {
        store.insert_new(m).unwrap();
    }
    store.commit().await.unwrap();
    dispatcher.submit_all([&parked, &parked_with_ttl, &due]);
    let queued = |d: &waq::dispatch::Dispatcher| {
        let snapshot = d.snapshot(&store);
        snapshot.senders.iter().map(|s| s.queued).sum::<usize>()
    };
    assert_eq!(queued(&dispatcher), 3);
    for _ in 0..2 {
        assert_eq!(dispatcher.resync(&store).unwrap(), 3);
        assert_eq!(queued(&dispatcher), 3, "each message counts once");
    }
}

#[test]
fn a_state_dir_it_creates_is_for_its_user_alone() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    // Open to everyone above it, as under a umask of 022 or 000.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = dir.path().join("lib").join("waq");
    let store = Store::open(&state, &cfg()).unwrap();
    drop(store);
    for d in [dir.path().join("lib"), state] {
        let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", d.display());
    }
}

#[test]
fn removing_a_message_forgets_every_attempts_wamid() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &cfg()).unwrap();
    let mut m = message(&store, "14155550001", None);
    // Accepted twice: the first wamid lives on in the history only.
    m.transition(
        State::Sent,
        2,
        format!("{}wamid.A", waq::model::ACCEPTED_AS),
    );
    m.transition(State::Queued, 3, "retry requested");
    m.transition(
        State::Sent,
        4,
        format!("{}wamid.B", waq::model::ACCEPTED_AS),
    );
    m.wamid = Some("wamid.B".into());
    assert_eq!(store.insert_new(&m).unwrap(), Insert::Created);
    store.set_wamid("wamid.A", m.id).unwrap();
    store.set_wamid("wamid.B", m.id).unwrap();
    assert_eq!(store.lookup_wamid("wamid.A").unwrap(), Some(m.id));
    store.remove(&m).unwrap();
    assert_eq!(store.lookup_wamid("wamid.A").unwrap(), None);
    assert_eq!(store.lookup_wamid("wamid.B").unwrap(), None);
}

/// `/v1/stats` may be asked before the sender loops run (a start still reading its queue
/// back): the messaging limit's count is read from the store, not from the loops.
#[tokio::test]
async fn the_messaging_limit_count_shows_before_the_loops_run() {
    let dir = tempfile::tempdir().unwrap();
    let config = waq::config::Config::from_toml(
        &format!(
            "state_dir = \"{0}\"\n[socket]\npath = \"{0}/waq.sock\"\n[[senders]]\nname = \"main\"\nphone_number_id = \"120000000000001\"\ntoken = \"t\"\nmessaging_limit = 2\nportfolio = \"acme\"\n",
            dir.path().display()
        ),
        dir.path(),
    )
    .unwrap();
    let store = Store::open(&dir.path().join("state"), &cfg()).unwrap();
    let now = waq::model::now_ms();
    store
        .record_reached("acme", "14155550101", now - 1_000)
        .unwrap();
    store.commit().await.unwrap();
    let dispatcher = waq::dispatch::Dispatcher::new(&config).unwrap();
    let snapshot = dispatcher.snapshot(&store);
    let limit = snapshot.senders[0].messaging_limit.as_ref().unwrap();
    assert_eq!(
        (limit.portfolio.as_str(), limit.limit, limit.reached_24h),
        ("acme", 2, 1)
    );
    assert_eq!(limit.full_until, None, "1 of 2 is not full");
}
