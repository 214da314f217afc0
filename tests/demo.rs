//! `waq demo`, run as a user runs it (without a terminal, so it prints plain lines): it tells
//! its story, ends with a summary whose claims hold, and leaves nothing behind: no process, no
//! temporary directory, whether it finishes or is interrupted with Ctrl-C.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::wait_exit;

/// The demo with its temporary directory under `tmp` (so what it leaves there can be seen).
fn demo(tmp: &Path, args: &[&str]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_waq"));
    cmd.arg("demo")
        .args(args)
        .env("TMPDIR", tmp)
        .env_remove("WAQ_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn().unwrap()
}

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push(format!(
                "{}: {cmdline}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    found
}

/// Nothing of the demo is left: no entry under `tmp`, no process that mentions it. (The
/// daemon may take a moment to exit after its parent is gone, hence the short wait.)
fn assert_nothing_left(tmp: &Path, output: &str) {
    let needle = tmp.display().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !processes_mentioning(&needle).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let procs = processes_mentioning(&needle);
    assert!(
        procs.is_empty(),
        "processes left running: {procs:?}\n{output}"
    );
    let left: Vec<_> = std::fs::read_dir(tmp)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}\n{output}");
}

/// The value column of the summary row whose label starts with `label`.
fn summary_value(stdout: &str, label: &str) -> u64 {
    let summary = stdout
        .split("\nSummary\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no summary:\n{stdout}"));
    let line = summary
        .lines()
        .find(|l| l.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no summary row {label:?}:\n{stdout}"));
    let value = line.trim_start()[label.len()..]
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .replace(',', "");
    value
        .parse()
        .unwrap_or_else(|_| panic!("row {label:?} has no number: {line:?}"))
}

#[test]
fn demo_tells_its_story_and_cleans_up() {
    let tmp = tempfile::tempdir().unwrap();
    let child = demo(tmp.path(), &["--messages", "200"]);
    let started = Instant::now();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let all = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        out.status.success(),
        "waq demo exited {}\n{all}",
        out.status
    );
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "took {:?}",
        started.elapsed()
    );

    // The five chapters, as plain lines (stdout is not a terminal here: no escape codes).
    for chapter in [
        "1 · First contact",
        "2 · Customers reply",
        "3 · A burst: 200 sends",
        "4 · Numbers not on WhatsApp",
        "5 · A transient outage",
    ] {
        assert!(stdout.contains(chapter), "no chapter {chapter:?}\n{all}");
    }
    assert!(
        !stdout.contains('\x1b'),
        "escape codes without a terminal\n{all}"
    );
    assert!(stdout.contains("422 window_closed"), "{all}");
    assert!(stdout.contains("free-form text"), "{all}");
    assert!(stdout.contains("Meta error 131026"), "{all}");
    assert!(stdout.contains("sent 200/200"), "{all}");

    // The summary: what the simulator (standing in for Meta) counted.
    assert_eq!(
        summary_value(&stdout, "131047 free-form outside the window"),
        0,
        "{all}"
    );
    assert_eq!(
        summary_value(&stdout, "130429 over the rate limit"),
        0,
        "{all}"
    );
    let busiest = summary_value(&stdout, "busiest second at Meta");
    assert!(
        busiest > 0 && busiest <= 200,
        "busiest second {busiest}\n{all}"
    );
    assert_eq!(summary_value(&stdout, "131026 not on WhatsApp"), 3, "{all}");
    assert_eq!(summary_value(&stdout, "failed"), 3, "{all}");
    assert!(
        summary_value(&stdout, "outage: 503 answers from Meta") > 0,
        "{all}"
    );
    let enqueued = summary_value(&stdout, "messages enqueued");
    let accepted = summary_value(&stdout, "accepted by Meta (sent)");
    assert_eq!(accepted + 3, enqueued, "{all}");
    assert!(summary_value(&stdout, "delivered") <= accepted, "{all}");
    assert!(stdout.contains("cleaned up"), "{all}");

    assert_nothing_left(tmp.path(), &all);
}

#[test]
fn ctrl_c_stops_the_daemon_and_removes_the_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = demo(tmp.path(), &["--messages", "2000", "--mps", "50"]);
    // Read lines as they come; interrupt once the burst is under way.
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                seen.push_str(&line);
                seen.push('\n');
                if line.contains("sent ") && line.contains("(limit 50/s)") {
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                panic!("the demo ended before its burst:\n{seen}")
            }
        }
        assert!(Instant::now() < deadline, "no burst within 120 s:\n{seen}");
    }
    // While it runs, its daemon exists.
    let needle = tmp.path().display().to_string();
    assert!(
        processes_mentioning(&needle)
            .iter()
            .any(|p| p.contains(" serve --config ")),
        "no daemon running during the demo"
    );

    let rc = unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert_eq!(rc, 0);
    let (status, stderr) = wait_exit(&mut child, Duration::from_secs(30), "the demo on SIGINT");
    let _ = reader.join();
    assert_eq!(status.code(), Some(130), "{seen}\n{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert_nothing_left(tmp.path(), &format!("{seen}\n{stderr}"));
}

/// As `waq demo | head -3`: once the reader is gone the demo stops quietly (exit 0, no
/// panic) and still removes its daemon, simulator and directory.
#[test]
fn a_reader_that_stops_early_ends_the_demo_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = demo(tmp.path(), &["--messages", "2000", "--mps", "50"]);
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    for _ in 0..3 {
        reader.read_line(&mut seen).unwrap();
    }
    assert!(seen.lines().count() == 3, "{seen}");
    drop(reader);
    let (status, stderr) = wait_exit(
        &mut child,
        Duration::from_secs(60),
        "the demo after its reader went away",
    );
    assert_eq!(status.code(), Some(0), "{seen}\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_nothing_left(tmp.path(), &format!("{seen}\n{stderr}"));
}

#[test]
fn bad_options_are_usage_errors() {
    let out = Command::new(env!("CARGO_BIN_EXE_waq"))
        .args(["demo", "--messages", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
