//! Crash loop: a real daemon against the simulator under continuous enqueue load, killed with
//! SIGKILL at random moments (under load, during start-up before the socket answers, during
//! the commit of a big batch) and restarted, `WAQ_CRASH_LOOPS` times (5 by default).
//!
//! Afterwards, with the load stopped and the queue drained: every acknowledged id exists,
//! every message is terminal, the store opened every time, and a message reached Meta twice
//! only if it was recorded `sending` when a kill came (two `sending` entries in a row in its
//! history). The counts are printed (`--nocapture`).
//!
//! Long run: `WAQ_CRASH_LOOPS=50 cargo test --release --test crash -- --nocapture`.

mod common;
mod rel;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{Conn, Daemon};
use rel::{all_messages, env_num, recipient, sender_toml, wait_drained, Sim, TERMINAL};
use serde_json::{json, Value};
use waq::sim::SimConfig;

const TOKEN: &str = "crash-loop-token";
const MPS: u32 = 500;
/// Items of the batch a kill is aimed at.
const BIG: usize = 2000;

/// What the producers were told: every id answered 202 / 200, with its tag.
#[derive(Default)]
struct Acks {
    ids: Vec<(String, String)>,
    /// Requests that got no answer (the daemon was killed under them).
    unanswered: u64,
}

struct Load {
    stop: Arc<AtomicBool>,
    /// Producers idle while set (the queue drains with no enqueue in flight).
    idle: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    acks: Arc<Mutex<Acks>>,
    next: Arc<AtomicUsize>,
}

/// A request for message number `n`, tagged so the simulator's side can be matched to it.
fn request(n: usize) -> (Value, String) {
    let tag = format!("crash:{n}");
    let body = json!({
        "to": recipient(n % 5000),
        "message": {"type": "template",
                    "template": {"name": "hello_world", "language": {"code": "en_US"}},
                    "biz_opaque_callback_data": tag},
        "metadata": {"tag": tag},
    });
    (body, tag)
}

/// Sends `count` messages as one batch on `conn`; records the acknowledged ones.
fn send_batch(conn: &mut Conn, first: usize, count: usize, acks: &Mutex<Acks>) -> bool {
    let (items, tags): (Vec<Value>, Vec<String>) = (first..first + count).map(request).unzip();
    let body = Value::Array(items).to_string();
    match conn.send("POST", "/v1/messages/batch", Some(body.as_bytes())) {
        Ok(r) if r.status == 200 => {
            let v = r.json();
            let results = v["results"].as_array().cloned().unwrap_or_default();
            assert_eq!(results.len(), count, "one result per item");
            let mut a = acks.lock().unwrap();
            for (res, tag) in results.iter().zip(tags) {
                let id = res["id"]
                    .as_str()
                    .unwrap_or_else(|| panic!("batch item refused: {res}"));
                a.ids.push((id.to_string(), tag));
            }
            true
        }
        Ok(r) if r.status == 503 => true, // shutting down: nothing promised
        Ok(r) => panic!("batch answered {}: {}", r.status, r.text()),
        Err(_) => {
            acks.lock().unwrap().unanswered += 1;
            false
        }
    }
}

fn send_one(conn: &mut Conn, next: &AtomicUsize, acks: &Mutex<Acks>) -> bool {
    let (body, tag) = request(next.fetch_add(1, Ordering::Relaxed));
    match conn.send("POST", "/v1/messages", Some(body.to_string().as_bytes())) {
        Ok(r) if r.status == 202 => {
            let id = r.json()["id"].as_str().unwrap_or_default().to_string();
            acks.lock().unwrap().ids.push((id, tag));
            true
        }
        Ok(r) if r.status == 503 => true,
        Ok(r) => panic!("enqueue answered {}: {}", r.status, r.text()),
        Err(_) => {
            acks.lock().unwrap().unanswered += 1;
            false
        }
    }
}

fn open(socket: &Path) -> Option<Conn> {
    let c = Conn::open(socket).ok()?;
    c.set_read_timeout(Duration::from_secs(20));
    Some(c)
}

impl Load {
    /// `producers` threads, each doing single enqueues and now and then a small batch, paced
    /// so the simulator can drain what they enqueue.
    fn start(socket: PathBuf, producers: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let idle = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(Mutex::new(Acks::default()));
        let next = Arc::new(AtomicUsize::new(0));
        let threads = (0..producers)
            .map(|_| {
                let (stop, idle, acks, next, socket) = (
                    stop.clone(),
                    idle.clone(),
                    acks.clone(),
                    next.clone(),
                    socket.clone(),
                );
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let Some(mut conn) = open(&socket) else {
                            std::thread::sleep(Duration::from_millis(5));
                            continue;
                        };
                        while !stop.load(Ordering::Relaxed) {
                            if idle.load(Ordering::Relaxed) {
                                std::thread::sleep(Duration::from_millis(10));
                                continue;
                            }
                            let ok = if fastrand::u8(0..20) == 0 {
                                let count = fastrand::usize(2..40);
                                let first = next.fetch_add(count, Ordering::Relaxed);
                                send_batch(&mut conn, first, count, &acks)
                            } else {
                                send_one(&mut conn, &next, &acks)
                            };
                            if !ok {
                                break;
                            }
                            std::thread::sleep(Duration::from_millis(fastrand::u64(10..30)));
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            idle,
            threads,
            acks,
            next,
        }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            t.join().expect("a producer thread panicked");
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[derive(Default, Debug)]
struct Kills {
    under_load: u32,
    while_draining: u32,
    start_up: u32,
    start_up_before_socket: u32,
    big_batch: u32,
    big_batch_acked: u32,
}

/// Starts the daemon again after a kill; a daemon that cannot open its store is the finding
/// this test exists for, so it says so plainly.
fn restart(d: &mut Daemon, after: &str) {
    d.spawn_again();
    if let Err(e) = d.try_wait_ready() {
        let log = d.log();
        let tail: String = log
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        panic!(
            "THE STORE DID NOT OPEN after a SIGKILL {after}: {e}.\n\
             A state directory left by a kill must always open (crash recovery of the store).\n\
             Last lines of the daemon's log:\n{tail}"
        );
    }
}

#[test]
fn sigkill_loop_keeps_every_acknowledged_message() {
    let loops = env_num("WAQ_CRASH_LOOPS", 5) as u32;
    let mut cfg = SimConfig {
        token: TOKEN.into(),
        ..SimConfig::default()
    };
    cfg.numbers[0].mps = MPS;
    // Requests take a while, so kills find messages `sending`.
    cfg.faults.latency_ms = 5;
    cfg.faults.jitter_ms = 60;
    let sim = Sim::start(cfg);

    let mut d = Daemon::builder()
        .without_default_sender()
        .set("api", &format!("base_url = \"{}\"", sim.base_url()))
        .set("api", "request_timeout_ms = 5000")
        .set("dispatch", "retry_min_ms = 50")
        .set("dispatch", "retry_max_ms = 500")
        .set("dispatch", "max_attempts = 1000")
        .toml(&sender_toml(TOKEN, MPS))
        .start();
    let mut load = Load::start(d.socket.clone(), 3);
    let mut kills = Kills::default();
    // First message number of each big batch the kill left without an answer.
    let mut unanswered_batches = Vec::new();
    let started = Instant::now();

    for i in 0..loops {
        match i % 4 {
            0 => {
                std::thread::sleep(Duration::from_millis(fastrand::u64(300..1500)));
                d.kill9();
                kills.under_load += 1;
                restart(&mut d, &format!("under load (kill #{})", i + 1));
            }
            1 => {
                // No enqueue in flight: only the dispatcher writes.
                std::thread::sleep(Duration::from_millis(fastrand::u64(200..800)));
                load.idle.store(true, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(fastrand::u64(100..700)));
                d.kill9();
                kills.while_draining += 1;
                load.idle.store(false, Ordering::Relaxed);
                restart(&mut d, &format!("while draining (kill #{})", i + 1));
            }
            2 => {
                std::thread::sleep(Duration::from_millis(fastrand::u64(200..800)));
                d.kill9();
                d.spawn_again();
                std::thread::sleep(Duration::from_millis(fastrand::u64(0..8)));
                let answered = d
                    .try_conn()
                    .ok()
                    .is_some_and(|mut c| c.send("GET", "/v1/health", None).is_ok());
                d.kill9();
                kills.start_up += 1;
                if !answered {
                    kills.start_up_before_socket += 1;
                }
                restart(&mut d, &format!("during start-up (kill #{})", i + 1));
            }
            _ => {
                std::thread::sleep(Duration::from_millis(fastrand::u64(200..800)));
                let socket = d.socket.clone();
                let (acks, next) = (load.acks.clone(), load.next.clone());
                let first = next.fetch_add(BIG, Ordering::Relaxed);
                let batch = std::thread::spawn(move || {
                    open(&socket).is_some_and(|mut c| send_batch(&mut c, first, BIG, &acks))
                });
                std::thread::sleep(Duration::from_millis(fastrand::u64(5..300)));
                d.kill9();
                kills.big_batch += 1;
                if batch.join().expect("the batch thread panicked") {
                    kills.big_batch_acked += 1;
                } else {
                    unanswered_batches.push(first);
                }
                restart(&mut d, &format!("during a big batch (kill #{})", i + 1));
            }
        }
    }
    // Some load on the last start too, then stop it and let the queue drain.
    std::thread::sleep(Duration::from_millis(500));
    load.stop();
    let load_s = started.elapsed().as_secs_f64();
    assert!(
        wait_drained(&d, Duration::from_secs(300)),
        "the queue did not drain: {:?}",
        rel::counts(&d)
    );

    let acks = std::mem::take(&mut *load.acks.lock().unwrap());
    let messages = all_messages(&d);
    let by_id: HashMap<&str, &Value> = messages
        .iter()
        .map(|m| (m["id"].as_str().unwrap_or_default(), m))
        .collect();

    // Every acknowledged id exists, with the message it was given.
    let missing: Vec<&(String, String)> = acks
        .ids
        .iter()
        .filter(|(id, _)| !by_id.contains_key(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged messages are gone after the kills, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    for (id, tag) in &acks.ids {
        assert_eq!(by_id[id.as_str()]["metadata"]["tag"], *tag, "message {id}");
    }

    // Every message is terminal; with no permanent error in play, every one was sent.
    let not_terminal: Vec<&Value> = messages
        .iter()
        .filter(|m| !TERMINAL.contains(&m["state"].as_str().unwrap_or_default()))
        .collect();
    assert!(not_terminal.is_empty(), "not terminal: {not_terminal:?}");
    let not_sent: Vec<&Value> = messages
        .iter()
        .filter(|m| m["state"] != "sent")
        .take(5)
        .collect();
    assert!(not_sent.is_empty(), "messages not sent: {not_sent:?}");

    // Duplicates at Meta's side, against the messages a kill caught `sending`.
    let accepted = sim.accepted_by_tag();
    let stored_tags: HashSet<&str> = messages
        .iter()
        .filter_map(|m| m["metadata"]["tag"].as_str())
        .collect();
    let vanished: Vec<&String> = accepted
        .keys()
        .filter(|t| !stored_tags.contains(t.as_str()))
        .collect();
    assert!(
        vanished.is_empty(),
        "{} messages reached Meta but are not in the store, e.g. {:?}",
        vanished.len(),
        &vanished[..vanished.len().min(10)]
    );
    let mut resent = 0u64; // messages with `sending` followed by `sending`
    let mut duplicated = 0u64; // messages Meta accepted more than once
    let mut extra_sends = 0u64;
    let mut unexplained = Vec::new();
    for m in &messages {
        let tag = m["metadata"]["tag"].as_str().unwrap_or_default();
        let times = accepted.get(tag).copied().unwrap_or(0);
        assert!(
            times >= 1,
            "message {} is `sent` but Meta never accepted it",
            m["id"]
        );
        let states: Vec<&str> = m["history"]
            .as_array()
            .map(|h| h.iter().filter_map(|e| e["state"].as_str()).collect())
            .unwrap_or_default();
        let was_resent = states.windows(2).any(|w| w == ["sending", "sending"]);
        resent += u64::from(was_resent);
        if times > 1 {
            duplicated += 1;
            extra_sends += u64::from(times - 1);
            if !was_resent {
                unexplained.push((m["id"].clone(), times, states.join(" > ")));
            }
        }
    }
    let stored_unacked = messages.len() - acks.ids.len();
    // A kill before a batch's answer leaves all of it (the kill came after it was finished)
    // or none of it (the next start takes back an unfinished batch), never a part.
    let stored_of_batch: Vec<usize> = unanswered_batches
        .iter()
        .map(|first| {
            (*first..first + BIG)
                .filter(|n| stored_tags.contains(format!("crash:{n}").as_str()))
                .count()
        })
        .collect();
    let partial = stored_of_batch
        .iter()
        .filter(|n| **n > 0 && **n < BIG)
        .count();
    let log = d.log();
    let taken_back = log.matches("took back the messages of a batch").count();
    let report = format!(
        "crash loop: {loops} SIGKILLs in {load_s:.1} s of load ({} under load, {} while draining, {} during start-up \
         ({} before the socket answered), {} during a 2,000-item batch ({} of them acknowledged; items stored of the unanswered ones: {:?}, {} partial, {} taken back at the next start)); \
         the store opened at every restart ({} starts that served); {} ids acknowledged, {} messages stored ({} stored \
         but unanswered: the kill came after the commit), {} requests left unanswered; all sent. \
         Meta accepted {} messages more than once ({} extra sends); {} messages were resent after \
         a kill found them `sending`; {} duplicates without a `sending` record",
        kills.under_load,
        kills.while_draining,
        kills.start_up,
        kills.start_up_before_socket,
        kills.big_batch,
        kills.big_batch_acked,
        stored_of_batch,
        partial,
        taken_back,
        loops + 1,
        acks.ids.len(),
        messages.len(),
        stored_unacked,
        acks.unanswered,
        duplicated,
        extra_sends,
        resent,
        unexplained.len(),
    );
    eprintln!("{report}");
    assert!(
        !log.contains("panicked"),
        "the daemon panicked:\n{}",
        log.lines()
            .filter(|l| l.contains("panicked"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(
        partial, 0,
        "part of an unanswered batch was kept (items stored per unanswered batch: {stored_of_batch:?})"
    );
    assert!(
        unexplained.is_empty(),
        "messages sent twice although no kill found them `sending` (id, times, history): {:?}",
        &unexplained[..unexplained.len().min(10)]
    );
}
