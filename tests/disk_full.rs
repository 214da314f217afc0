//! Disk full: the running daemon's file size limit (RLIMIT_FSIZE) is lowered with `prlimit`
//! (util-linux) so sled's files cannot grow. Enqueues must then be refused with 507 (or 503)
//! and a message saying what to do — the daemon must not die of SIGXFSZ — nothing
//! acknowledged before may be lost, and once the limit is raised again (or the daemon
//! restarted without it) service resumes. What happened is printed (`--nocapture`).
//! Skipped, saying so, where `prlimit` is not installed; the counts test sets the limit with
//! the prlimit(2) call itself and always runs.

mod common;
mod rel;

use std::process::Command;
use std::time::Duration;

use common::{
    parked, sender_toml, sim_config, template_request, wait_until, Daemon, Sim, PATIENCE,
    SIM_NUMBER, TOKEN,
};
use rel::all_messages;

fn prlimit(pid: u32, fsize: &str) -> bool {
    Command::new("prlimit")
        .arg("--pid")
        .arg(pid.to_string())
        .arg(format!("--fsize={fsize}"))
        .status()
        .is_ok_and(|s| s.success())
}

fn state_bytes(d: &Daemon) -> u64 {
    std::fs::read_dir(&d.state_dir)
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

#[test]
fn a_full_disk_refuses_new_work_and_keeps_what_was_acknowledged() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        eprintln!("disk full: skipped, `prlimit` (util-linux) is not installed");
        return;
    }
    let mut d = Daemon::start();
    let mut acked = Vec::new();
    let body = |i: usize| {
        let mut r = parked(template_request(&format!("+1415666{i:04}")));
        r["metadata"] = serde_json::json!({"pad": "p".repeat(900)});
        r
    };
    for i in 0..200 {
        let r = d.post("/v1/messages", &body(i));
        assert_eq!(r.status, 202, "{}", r.text());
        acked.push(r.json()["id"].as_str().unwrap_or_default().to_string());
    }
    // No file may grow past its current size (plus a little).
    let limit = state_bytes(&d) + 64 * 1024;
    assert!(prlimit(d.pid(), &format!("{limit}:")), "prlimit failed");

    let (mut refused, mut codes, mut died) = (0, Vec::new(), false);
    for i in 200..5_000 {
        let Ok(mut c) = d.try_conn() else {
            died = true;
            break;
        };
        match c.send("POST", "/v1/messages", Some(body(i).to_string().as_bytes())) {
            Ok(r) if r.status == 202 => {
                acked.push(r.json()["id"].as_str().unwrap_or_default().to_string())
            }
            Ok(r) => {
                assert!(
                    r.status == 507 || r.status == 503,
                    "a full disk answered {}: {}",
                    r.text(),
                    r.status
                );
                let code = r.code();
                assert!(r.json()["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.len() > 20));
                codes.push(format!(
                    "{} {code}: {}",
                    r.status,
                    r.json()["error"]["message"]
                ));
                refused += 1;
                if refused >= 5 {
                    break;
                }
            }
            Err(_) => {
                died = !d.is_running();
                break;
            }
        }
    }
    let log = d.log();
    let reached = codes.first().cloned().unwrap_or_default();
    eprintln!(
        "disk full: RLIMIT_FSIZE {limit} bytes; {} enqueues acknowledged; {refused} refused \
         ({reached}); daemon {}",
        acked.len(),
        if died { "DIED" } else { "alive" }
    );
    assert!(
        !died,
        "the daemon died when the disk filled up:\n{}",
        log.lines().rev().take(20).collect::<Vec<_>>().join("\n")
    );
    assert!(refused > 0, "the limit was never reached");

    // Raise the limit: service resumes (at once, or after a restart if the store gave up).
    assert!(prlimit(d.pid(), "unlimited:"), "prlimit failed");
    std::thread::sleep(Duration::from_millis(200));
    let r = d.post("/v1/messages", &body(9_999));
    let resumed_in_place = r.status == 202;
    if !resumed_in_place {
        d.kill9();
        d.spawn_again();
        d.try_wait_ready()
            .expect("the daemon starts again on the state dir");
        let r = d.post("/v1/messages", &body(9_999));
        assert_eq!(r.status, 202, "after a restart: {}", r.text());
    }
    let stored: std::collections::HashSet<String> = all_messages(&d)
        .iter()
        .filter_map(|m| m["id"].as_str().map(str::to_string))
        .collect();
    let lost: Vec<&String> = acked.iter().filter(|id| !stored.contains(*id)).collect();
    eprintln!(
        "disk full: after raising the limit, service {}; {} acknowledged messages lost",
        if resumed_in_place {
            "resumed in place"
        } else {
            "resumed after a restart"
        },
        lost.len()
    );
    assert!(lost.is_empty(), "acknowledged messages lost: {lost:?}");
    assert!(
        !d.log().contains("panicked"),
        "the daemon panicked:\n{}",
        d.log()
    );
}

/// Every batch the full store refuses is refused as a whole (507 or 503, a message in words),
/// the first and the later ones alike; health says the store refuses writes until it heals.
#[test]
fn batches_and_health_tell_the_same_story_while_the_disk_is_full() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        eprintln!("disk full: skipped, `prlimit` (util-linux) is not installed");
        return;
    }
    let d = Daemon::start();
    let batch = |from: usize| {
        let items: Vec<serde_json::Value> = (from..from + 300)
            .map(|i| {
                let mut r = parked(template_request(&format!("+1415777{:04}", i % 10_000)));
                r["metadata"] = serde_json::json!({"pad": "p".repeat(900)});
                r
            })
            .collect();
        serde_json::Value::Array(items)
    };
    let r = d.post("/v1/messages/batch", &batch(0));
    assert_eq!(r.status, 200, "{}", r.text());
    let first_id = r.json()["results"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!first_id.is_empty(), "{}", r.text());
    let health = d.get("/v1/health");
    assert_eq!(health.status, 200, "{}", health.text());
    assert_eq!(health.json()["status"], "ok");

    let limit = state_bytes(&d) + 64 * 1024;
    assert!(prlimit(d.pid(), &format!("{limit}:")), "prlimit failed");
    let mut refused = Vec::new();
    for round in 1..40 {
        let r = d.post("/v1/messages/batch", &batch(round * 300));
        if r.status == 200 {
            assert!(
                refused.is_empty(),
                "a batch was taken after one was refused"
            );
            continue;
        }
        assert!(
            r.status == 507 || r.status == 503,
            "{}: {}",
            r.status,
            r.text()
        );
        let message = r.message();
        assert!(
            !message.contains("Os {") && !message.contains("kind:"),
            "not a sentence: {message}"
        );
        assert!(r.json()["error"]["field"].is_null(), "{}", r.text());
        refused.push((r.status, r.code()));
        if refused.len() == 3 {
            break;
        }
    }
    eprintln!("disk full: batches refused with {refused:?}");
    assert_eq!(refused.len(), 3, "the limit was never reached");
    // Each of a refused batch's 300 send requests counts as refused.
    assert_eq!(d.metric("waq_enqueue_rejected_total"), 3 * 300);
    assert!(
        refused.iter().any(|(s, c)| *s == 507 && c == "disk_full"),
        "{refused:?}"
    );

    // The refused batches' messages count nowhere: the store's count of queued messages
    // agrees with the schedule's.
    let stats = d.get("/v1/stats").json();
    assert_eq!(
        stats["messages"]["queued"], stats["senders"][0]["queued"],
        "{stats}"
    );
    // While the store is closed for reopening, its files still count.
    assert!(stats["disk_bytes"].as_u64() > Some(0), "{stats}");

    let health = d.get("/v1/health");
    assert_eq!(health.status, 503, "{}", health.text());
    assert_eq!(health.json()["status"], "degraded");
    assert_eq!(
        health.json()["store"]["code"],
        "disk_full",
        "{}",
        health.text()
    );
    // The CLI reads that report as it reads a 200's, in words, and exits 1 (degraded).
    let cli = d.waq(&["health"]);
    let said = String::from_utf8_lossy(&cli.stdout);
    assert_eq!(cli.status.code(), Some(1), "{cli:?}");
    assert!(
        said.starts_with("degraded: store refuses writes (disk_full)") && !said.contains('{'),
        "{said}"
    );

    // Reads the closed store cannot serve get the same code, in words about a read.
    for path in [
        format!("/v1/messages/{first_id}"),
        "/v1/messages?limit=5".to_string(),
        "/v1/recipients/+14157770001".to_string(),
    ] {
        let r = d.get(&path);
        eprintln!("disk full: GET {path} answered {}", r.status);
        if r.status == 200 {
            continue;
        }
        assert_eq!(
            (r.status, r.code()),
            (507, "disk_full".into()),
            "{path}: {}",
            r.text()
        );
        let message = r.message();
        assert!(
            message.contains("nothing could be read") && !message.contains("stored"),
            "{path}: {message}"
        );
    }

    // A bulk change the closed store cannot make says that nothing was changed.
    for r in [
        d.delete("/v1/messages?to=%2B14157770001"),
        d.post(
            "/v1/messages/retry?code=meta_131026",
            &serde_json::json!({}),
        ),
    ] {
        eprintln!("disk full: a bulk change answered {}", r.status);
        if r.status == 200 {
            continue;
        }
        assert_eq!(
            (r.status, r.code()),
            (507, "disk_full".into()),
            "{}",
            r.text()
        );
        let message = r.message();
        assert!(message.contains("nothing was changed"), "{message}");
    }

    // Nothing is written while the disk stays full, yet health keeps saying so: the store's
    // reopening is not taken for room (several reopen attempts fall in these seconds).
    let watch_until = std::time::Instant::now() + Duration::from_secs(4);
    while std::time::Instant::now() < watch_until {
        let health = d.get("/v1/health");
        assert_eq!(health.status, 503, "{}", health.text());
        std::thread::sleep(Duration::from_millis(250));
    }

    // Room again: the store reopens, health says so without a write, and batches are taken.
    assert!(prlimit(d.pid(), "unlimited:"), "prlimit failed");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while d.get("/v1/health").status != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "health did not recover once there was room"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let r = d.post("/v1/messages/batch", &batch(50_000));
        if r.status == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the store did not heal: {}",
            r.text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let health = d.get("/v1/health");
    assert_eq!(health.status, 200, "{}", health.text());
    assert_eq!(health.json()["status"], "ok");
}

/// While the store refuses writes, messages that come due are not picked again and again: each
/// waits for the store's next reopen, and the log says so once per period, not once per try.
#[test]
fn messages_due_while_the_disk_is_full_wait_without_flooding_the_log() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        eprintln!("disk full: skipped, `prlimit` (util-linux) is not installed");
        return;
    }
    let d = Daemon::start();
    let due = std::time::SystemTime::now() + Duration::from_secs(2);
    for i in 0..50 {
        let mut r = template_request(&format!("+1415777{i:04}"));
        r["send_at"] = serde_json::json!(humantime::format_rfc3339_seconds(due).to_string());
        assert_eq!(d.post("/v1/messages", &r).status, 202);
    }
    let limit = state_bytes(&d) + 64 * 1024;
    assert!(prlimit(d.pid(), &format!("{limit}:")), "prlimit failed");
    // Fill what is left, until the store refuses.
    let mut refused = false;
    for i in 0..5_000 {
        let mut r = parked(template_request(&format!("+1415888{i:04}")));
        r["metadata"] = serde_json::json!({"pad": "p".repeat(900)});
        let status = d.post("/v1/messages", &r).status;
        if status == 507 || status == 503 {
            refused = true;
            break;
        }
    }
    assert!(refused, "the limit was never reached");
    // The 50 come due and are tried while the store refuses; the store keeps refusing (the
    // limit stays), so each would be tried again at every retry_min_ms.
    std::thread::sleep(Duration::from_secs(8));
    let log = d.log();
    let refusals = log
        .lines()
        .filter(|l| l.contains("before sending") || l.contains("before the request"))
        .count();
    assert!(refusals >= 1, "no attempt met the full store:\n{log}");
    assert!(
        refusals <= 2,
        "{refusals} lines for the attempts the full store refused:\n{log}"
    );
    assert!(prlimit(d.pid(), "unlimited:"), "prlimit failed");
}

/// Sets the soft RLIMIT_FSIZE of process `pid` (the hard limit stays); a process of the same
/// user may, root or not.
fn set_file_size_limit(pid: u32, soft: libc::rlim_t) {
    let mut now: libc::rlimit = unsafe { std::mem::zeroed() };
    let pid = pid as libc::pid_t;
    let read = unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, std::ptr::null(), &mut now) };
    assert_eq!(read, 0, "prlimit: {}", std::io::Error::last_os_error());
    let new = libc::rlimit {
        rlim_cur: soft.min(now.rlim_max),
        rlim_max: now.rlim_max,
    };
    let set = unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, &new, std::ptr::null_mut()) };
    assert_eq!(set, 0, "prlimit: {}", std::io::Error::last_os_error());
}

/// Messages are sent all along: before the disk fills, while the store is closed (attempts
/// fail and wait), and at once when it reopens, while the dispatcher resyncs its schedule from
/// the store. Once all are sent, `/v1/stats` and `/metrics` must count what is stored.
#[test]
fn the_counts_match_the_stored_states_after_the_store_reopens() {
    let mut sim_cfg = sim_config();
    sim_cfg.numbers[0].mps = 10_000;
    let sim = Sim::start(sim_cfg);
    let mut d = Daemon::builder()
        .against(&sim)
        .without_default_sender()
        .toml(&sender_toml("main", SIM_NUMBER, TOKEN, 1_000))
        .set("dispatch", "retry_min_ms = 50")
        .start();
    const MESSAGES: usize = 3_000;
    for from in (0..MESSAGES).step_by(500) {
        let batch: Vec<serde_json::Value> = (from..from + 500)
            .map(|i| template_request(&format!("+1415888{i:04}")))
            .collect();
        d.enqueue_batch(&batch);
    }
    // Nothing can be written past the first byte of any file: the next flush fails.
    set_file_size_limit(d.pid(), 1);
    wait_until(
        "the store to refuse writes",
        PATIENCE,
        || (d.get("/v1/health").status == 503).then_some(()),
        || d.get("/v1/health").text(),
    );
    assert!(d.is_running(), "the daemon died of the file size limit");
    set_file_size_limit(d.pid(), libc::RLIM_INFINITY);
    wait_until(
        "every message to be sent",
        PATIENCE,
        || {
            let r = d.get("/v1/messages?state=queued,sending,retrying&limit=1");
            (r.status == 200
                && r.json()["messages"]
                    .as_array()
                    .is_some_and(|m| m.is_empty()))
            .then_some(())
        },
        || d.get("/v1/stats").json()["messages"].to_string(),
    );

    let mut stored = std::collections::BTreeMap::<String, u64>::new();
    for m in all_messages(&d) {
        *stored
            .entry(m["state"].as_str().unwrap_or_default().to_string())
            .or_default() += 1;
    }
    let stats = d.get("/v1/stats").json();
    let counted: std::collections::BTreeMap<String, u64> = stats["messages"]
        .as_object()
        .expect("messages by state")
        .iter()
        .filter(|(_, n)| n.as_u64() != Some(0))
        .map(|(s, n)| (s.clone(), n.as_u64().unwrap_or_default()))
        .collect();
    let reopened = d.log().contains("the database is open again");
    eprintln!("disk full: reopened in place {reopened}; stored {stored:?}; counted {counted:?}");
    assert!(
        reopened,
        "the store never closed and reopened:\n{}",
        d.log()
    );
    assert_eq!(
        stored.get("sent").copied(),
        Some(MESSAGES as u64),
        "{stored:?}"
    );
    assert_eq!(counted, stored, "/v1/stats counts what is stored");
    assert_eq!(stats["queue_depth"], 0, "{stats}");
    assert_eq!(d.metric("waq_queue_depth"), 0);
}

/// A full disk is handled inside the daemon (507, health 503, a reopen when there is room), and
/// a restart could not even start on it: the service manager's watchdog keeps being pinged,
/// and the status line says why writes are refused.
#[test]
fn the_watchdog_is_pinged_and_told_while_the_disk_is_full() {
    let notify_dir = tempfile::tempdir().unwrap();
    let notify_path = notify_dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(PATIENCE)).unwrap();
    let d = Daemon::builder()
        .env("NOTIFY_SOCKET", notify_path.to_str().unwrap())
        .env("WATCHDOG_USEC", "2000000")
        .start();
    d.enqueue(&parked(template_request("+14155550100")));
    set_file_size_limit(d.pid(), 1);
    // An enqueue meets the limit (or the store closed by a flush that met it first).
    let mut refused = false;
    for i in 0..100 {
        let status = d
            .post(
                "/v1/messages",
                &parked(template_request(&format!("+1415889{i:04}"))),
            )
            .status;
        if status == 507 || status == 503 {
            refused = true;
            break;
        }
    }
    assert!(refused, "the store never refused");
    assert_eq!(d.get("/v1/health").status, 503);

    let mut buf = [0u8; 512];
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut next = || {
        assert!(std::time::Instant::now() < deadline, "no watchdog pings");
        let n = notify.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).to_string()
    };
    // The status line names the store; then the pings go on (one a second at this interval).
    loop {
        let m = next();
        if let Some(status) = m.strip_prefix("STATUS=") {
            if status.contains("store refuses writes") {
                assert!(status.contains("disk is full"), "{status}");
                break;
            }
        }
    }
    let mut pings = 0;
    while pings < 3 {
        let m = next();
        pings += usize::from(m.contains("WATCHDOG=1"));
        if let Some(status) = m.strip_prefix("STATUS=") {
            assert!(status.contains("store refuses writes"), "{status}");
        }
    }
    assert_eq!(d.get("/v1/health").status, 503, "still full meanwhile");
    set_file_size_limit(d.pid(), libc::RLIM_INFINITY);
}
