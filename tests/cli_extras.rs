//! `waq stats --watch`, `waq completions` and `waq man`; output to a reader that stops early;
//! the usage line of errors; what `waq serve` logs at start.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{bin, parked, template_request, Daemon};

/// Starts `waq ARGS` against `d` without a terminal, its stdout piped.
fn spawn_client(d: &Daemon, args: &[&str]) -> std::process::Child {
    Command::new(bin())
        .args(args)
        .env("WAQ_SOCKET", &d.socket)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Reads `child`'s stdout line by line on a thread: the lines arrive on the receiver.
fn lines_of(
    child: &mut std::process::Child,
) -> (mpsc::Receiver<String>, std::thread::JoinHandle<()>) {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (rx, reader)
}

/// Sends SIGINT (Ctrl-C) to `child` and waits for it to exit.
fn interrupt(child: &mut std::process::Child) -> std::process::ExitStatus {
    stop(child, libc::SIGINT)
}

/// Sends `signal` to `child` and waits for it to exit.
fn stop(child: &mut std::process::Child, signal: i32) -> std::process::ExitStatus {
    unsafe {
        libc::kill(child.id() as i32, signal);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "it did not stop on signal {signal}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `waq stats --watch ARGS` without a terminal until `frames` frames (blocks separated by
/// `---` lines, or JSON lines) arrived, then sends SIGINT; returns the output and exit code.
fn watch(d: &Daemon, args: &[&str], frames: usize, json: bool) -> (String, Option<i32>) {
    let mut child = spawn_client(d, &[&["stats", "--watch"][..], args].concat());
    let (rx, reader) = lines_of(&mut child);
    let mut out = String::new();
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen < frames {
        assert!(Instant::now() < deadline, "too few frames:\n{out}");
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            if (json && line.starts_with('{')) || (!json && line.starts_with("--- ")) {
                seen += 1;
            }
            out.push_str(&line);
            out.push('\n');
        }
    }
    let status = interrupt(&mut child);
    let _ = reader.join();
    (out, status.code())
}

#[test]
fn stats_watch_repeats_plain_blocks_and_stops_on_ctrl_c() {
    let d = Daemon::start();
    for n in 0..3 {
        let r = d.post(
            "/v1/messages",
            &parked(template_request(&format!("+1415555{n:04}"))),
        );
        assert_eq!(r.status, 202);
    }
    let (out, code) = watch(&d, &["--interval", "200ms"], 3, false);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        !out.contains('\x1b'),
        "escape codes without a terminal:\n{out}"
    );
    assert!(out.contains("queued 3"), "{out}");
    assert!(out.contains("SENDER"), "{out}");
    assert!(out.contains("main "), "{out}");
    assert!(out.contains("0/80"), "{out}");
    assert!(out.contains("in the last 200ms"), "{out}");
}

#[test]
fn events_follows_until_ctrl_c_and_exits_0() {
    let d = Daemon::start();
    let mut child = spawn_client(&d, &["events"]);
    let (rx, reader) = lines_of(&mut child);
    // Enqueue until an event shows the stream is followed (it may connect after the first).
    let deadline = Instant::now() + Duration::from_secs(30);
    let line = loop {
        assert!(Instant::now() < deadline, "no event arrived");
        let r = d.post("/v1/messages", &parked(template_request("+14155551234")));
        assert_eq!(r.status, 202);
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            break line;
        }
    };
    assert!(line.starts_with('{'), "{line}");
    let status = interrupt(&mut child);
    let _ = reader.join();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn events_exits_0_on_sigterm_even_while_its_reader_has_stalled() {
    let d = Daemon::start();
    // Its stdout is a pipe nobody reads: once the pipe is full, every write blocks.
    let mut child = spawn_client(&d, &["events"]);
    let wchan = format!("/proc/{}/wchan", child.id());
    let batch: Vec<serde_json::Value> = (0..1000)
        .map(|i| parked(template_request(&format!("+1415555{i:04}"))))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&wchan)
        .unwrap_or_default()
        .contains("pipe")
    {
        assert!(
            Instant::now() < deadline,
            "the events client never blocked on its pipe"
        );
        assert_eq!(
            d.post("/v1/messages/batch", &serde_json::json!(batch))
                .status,
            200
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(stop(&mut child, libc::SIGTERM).code(), Some(0));
}

#[test]
fn stats_watch_json_prints_one_answer_per_line() {
    let d = Daemon::start();
    let (out, code) = watch(&d, &["--json", "--interval", "100ms"], 2, true);
    assert_eq!(code, Some(0), "{out}");
    for line in out.lines().filter(|l| !l.is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v["senders"].is_array(), "{line}");
    }
}

#[test]
fn stats_watch_without_a_daemon_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .args(["stats", "--watch", "--socket"])
        .arg(dir.path().join("none.sock"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn stats_interval_needs_watch_and_a_sane_value() {
    for args in [
        &["stats", "--interval", "1s"][..],
        &["stats", "--watch", "--interval", "10ms"],
        &["stats", "--watch", "--interval", "soon"],
    ] {
        let out = Command::new(bin()).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}

#[test]
fn completions_for_every_shell() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef waq"),
        ("fish", "complete -c waq"),
        ("elvish", "edit:completion"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let out = Command::new(bin())
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(marker), "{shell}: no {marker:?}");
        for sub in ["demo", "send", "stats", "sim", "--watch"] {
            assert!(text.contains(sub), "{shell}: no {sub}");
        }
    }
    let out = Command::new(bin())
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn man_pages() {
    let page = |args: &[&str]| {
        let out = Command::new(bin()).arg("man").args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, text) = page(&[]);
    assert_eq!(code, Some(0));
    assert!(text.contains(".TH waq 1"), "{text}");
    assert!(text.contains("waq\\-demo(1)"), "{text}");
    let (code, text) = page(&["send"]);
    assert_eq!(code, Some(0));
    assert!(text.contains(".TH waq-send 1"), "{text}");
    assert!(text.contains("fallback\\-template"), "{text}");
    let (code, text) = page(&["sender resume"]);
    assert_eq!(code, Some(0));
    assert!(text.contains("waq\\-sender\\-resume"), "{text}");
    let (code, _) = page(&["nope"]);
    assert_eq!(code, Some(2));
}

#[test]
fn man_pages_have_exit_status_and_environment() {
    let page = |args: &[&str]| {
        let out = Command::new(bin()).arg("man").args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The exit codes a page lists, in order.
    let codes = |text: &str| -> Vec<String> {
        let section = text
            .split(".SH \"EXIT STATUS\"\n")
            .nth(1)
            .unwrap_or_else(|| panic!("no EXIT STATUS: {text}"));
        let section = section.split("\n.SH ").next().unwrap_or_default();
        section
            .lines()
            .filter_map(|l| l.strip_prefix("\\fB")?.strip_suffix("\\fR"))
            .map(str::to_string)
            .collect()
    };
    let top = page(&[]);
    assert_eq!(codes(&top), ["0", "1", "2", "3", "130"], "{top}");
    for variable in [
        "WAQ_SOCKET",
        "WAQ__SECTION__KEY",
        "WA_ACCESS_TOKEN",
        "NO_COLOR",
    ] {
        assert!(
            top.contains(&format!("\\fB{variable}\\fR")),
            "{variable}: {top}"
        );
    }
    // Before VERSION, as man pages order them.
    let exit = top.find(".SH \"EXIT STATUS\"").unwrap();
    let environment = top.find(".SH ENVIRONMENT").unwrap();
    let version = top.find(".SH VERSION").unwrap();
    assert!(exit < environment && environment < version, "{top}");

    for command in ["send", "sender resume", "events"] {
        let text = page(&[command]);
        assert_eq!(codes(&text), ["0", "1", "2", "3"], "{command}: {text}");
        assert!(text.contains("\\fBWAQ_SOCKET\\fR"), "{command}: {text}");
        assert!(!text.contains("WAQ__SECTION__KEY"), "{command}: {text}");
    }
    // `waq health` has a code of its own: degraded.
    let health = page(&["health"]);
    assert_eq!(codes(&health), ["0", "1", "2", "3"], "{health}");
    assert!(health.contains("\\fBWAQ_SOCKET\\fR"), "{health}");
    let serve = page(&["serve"]);
    assert_eq!(codes(&serve), ["0", "1", "2"], "{serve}");
    assert!(serve.contains("\\fBWAQ__SECTION__KEY\\fR") && serve.contains("token_env"));
    assert!(!serve.contains("\\fBWAQ_SOCKET\\fR"), "{serve}");
    assert_eq!(codes(&page(&["demo"])), ["0", "1", "2", "130"]);
}

#[test]
fn help_describes_every_argument() {
    let help = |args: &[&str]| {
        let out = Command::new(bin())
            .args(args)
            .arg("--help")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = help(&["status"]);
    assert!(
        text.contains("<ID>  The message id (16 hex digits)"),
        "{text}"
    );
    // Cancel and retry take one id, or filters for many.
    for (command, filters) in [
        ("cancel", &["--to <NUMBER>", "--sender <NAME>"][..]),
        (
            "retry",
            &["--code <CODE>", "--to <NUMBER>", "--sender <NAME>"][..],
        ),
    ] {
        let text = help(&[command]);
        assert!(
            text.contains("[ID]  The message id (16 hex digits)"),
            "{command}: {text}"
        );
        for filter in filters {
            let described = text
                .lines()
                .any(|l| l.trim_start().starts_with(filter) && l.contains(" every "));
            assert!(described, "{command} {filter}: {text}");
        }
    }
    let text = help(&["sender", "resume"]);
    assert!(text.contains("<NAME>  The sender's name"), "{text}");
    // Events are JSON lines with or without --json, and the help says so.
    let text = help(&["events"]);
    assert!(
        text.contains("events are JSON lines either way") && !text.contains("instead of a summary"),
        "{text}"
    );
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .args(["events", "--json", "--socket"])
        .arg(dir.path().join("none.sock"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "--json is still accepted");
}

#[test]
fn socket_goes_after_the_command_and_the_error_says_so() {
    let out = Command::new(bin())
        .args(["--socket", "/nonexistent/waq.sock", "health"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("'health --socket' exists"), "{err}");
}

/// Runs `waq ARGS` with stdout on a pipe that is closed after the first line, as
/// `waq ... | head -1` does; returns the exit code and stderr.
fn closed_early(d: &Daemon, args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(bin())
        .args(args)
        .env("WAQ_SOCKET", &d.socket)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(!first.is_empty(), "no output from {args:?}");
    // The reader is gone (dropped above); the rest of the output has nowhere to go.
    let (status, err) = common::wait_exit(
        &mut child,
        Duration::from_secs(30),
        &format!("{args:?} after its reader went away"),
    );
    (status.code(), err)
}

#[test]
fn a_reader_that_stops_early_ends_the_command_quietly() {
    let d = Daemon::start();
    // Enough messages that the listing outgrows a pipe's buffer (64 KiB).
    let items: Vec<serde_json::Value> = (0..1000)
        .map(|i| {
            let mut r = common::parked(common::template_request(&format!("+1415888{i:04}")));
            r["metadata"] = serde_json::json!({"pad": "p".repeat(100)});
            r
        })
        .collect();
    let r = d.post("/v1/messages/batch", &serde_json::Value::Array(items));
    assert_eq!(r.status, 200, "{}", r.text());
    for args in [
        &["ls", "--limit", "1000"][..],
        &["stats", "--watch", "--interval", "100ms"],
    ] {
        let (code, err) = closed_early(&d, args);
        assert_eq!(code, Some(0), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(!err.contains("Broken pipe"), "{args:?}: {err}");
    }
}

#[test]
fn events_with_a_heartbeat_notices_a_reader_gone_while_the_daemon_is_quiet() {
    let d = Daemon::start();
    // Nothing is enqueued: after `subscribed` only heartbeats come, and the command notices
    // at one of them that its reader is gone (without --heartbeat it would wait for an event).
    let (code, err) = closed_early(&d, &["events", "--heartbeat", "1"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn events_does_not_print_heartbeats() {
    let d = Daemon::start();
    let mut child = spawn_client(&d, &["events", "--heartbeat", "1"]);
    let (rx, reader) = lines_of(&mut child);
    let first = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(first.contains("\"subscribed\""), "{first}");
    // Time for a heartbeat or two, none of them printed; the stream goes on after them.
    if let Ok(line) = rx.recv_timeout(Duration::from_millis(2500)) {
        panic!("printed while nothing happened: {line}");
    }
    let r = d.post("/v1/messages", &parked(template_request("+14155551234")));
    assert_eq!(r.status, 202);
    let line = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(!line.contains("heartbeat"), "{line}");
    assert!(line.contains("0000000000000001"), "{line}");
    assert_eq!(interrupt(&mut child).code(), Some(0));
    let _ = reader.join();
}

#[test]
fn events_heartbeat_is_checked_on_the_command_line() {
    for value in ["0", "3601", "-5", "1.5", "soon"] {
        let out = Command::new(bin())
            .args([
                "events",
                "--heartbeat",
                value,
                "--socket",
                "/nonexistent/waq.sock",
            ])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "--heartbeat {value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--heartbeat"), "{err}");
        if value.parse::<i64>().is_ok() {
            assert!(
                err.contains("is not in 1..=3600"),
                "--heartbeat {value}: {err}"
            );
        }
    }
}

#[test]
fn usage_errors_do_not_list_the_socket_from_the_environment_as_required() {
    let out = Command::new(bin())
        .args(["send", "--json"])
        .env("WAQ_SOCKET", "/nonexistent/waq.sock")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let usage = err
        .lines()
        .find(|l| l.starts_with("Usage:"))
        .unwrap_or_else(|| panic!("no usage line: {err}"));
    assert!(!usage.contains("--socket"), "{usage}");
    assert!(usage.contains("--to"), "{usage}");
}

#[test]
fn the_webhook_listener_says_it_is_ready_once() {
    let d = Daemon::builder()
        .toml("[webhook]\nlisten = \"127.0.0.1:0\"\napp_secret = \"s3cret\"\nverify_token = \"v\"")
        .start();
    d.wait_for_log("webhook listener ready");
    // Start-up is over once the daemon serves; give a second line time to appear.
    std::thread::sleep(Duration::from_millis(300));
    let log = d.log();
    assert_eq!(log.matches("webhook listener ready").count(), 1, "{log}");
}

/// Kills the child when dropped (a failed assertion must not leave a daemon running).
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A configuration with one sender and nothing else beyond its state and socket.
fn one_sender_config(state_dir: &std::path::Path, socket: &std::path::Path) -> String {
    format!(
        "state_dir = {:?}\n[socket]\npath = {:?}\n[[senders]]\nname = \"main\"\nphone_number_id = \"1\"\ntoken = \"t\"\n",
        state_dir.display().to_string(),
        socket.display().to_string()
    )
}

/// `waq serve --config CONFIG`, its log in `log`.
fn serve(config: &std::path::Path, log: &std::path::Path) -> Reaped {
    Reaped(
        Command::new(bin())
            .args(["serve", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    )
}

#[test]
fn a_config_from_a_pipe_serves_and_a_reload_keeps_it_without_blocking_signals() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("config.fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let socket = dir.path().join("waq.sock");
    let log = dir.path().join("daemon.log");
    let text = one_sender_config(&dir.path().join("state"), &socket);
    let mut daemon = serve(&fifo, &log);
    std::fs::write(&fifo, text).unwrap();
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let wait_for = |needle: &str| {
        let deadline = Instant::now() + common::PATIENCE;
        while !read_log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in:\n{}",
                read_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for("waq is serving");
    let pid = daemon.0.id() as i32;
    unsafe { libc::kill(pid, libc::SIGHUP) };
    wait_for("reload refused");
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + common::PATIENCE;
    let status = loop {
        if let Some(status) = daemon.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "SIGTERM did not stop it:\n{}",
            read_log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}\n{}", read_log());
}

#[test]
fn a_socket_path_of_the_longest_length_binds() {
    let dir = tempfile::tempdir().unwrap();
    // 107 bytes, the most a socket address holds, with a name of 20 characters.
    let name = "waq-socket-of-20.chr";
    let room = 107 - dir.path().as_os_str().len() - 1 - name.len() - 1;
    let deep = dir.path().join("d".repeat(room));
    let socket = deep.join(name);
    assert_eq!(socket.as_os_str().len(), 107);
    let config = dir.path().join("waq.toml");
    std::fs::write(
        &config,
        one_sender_config(&dir.path().join("state"), &socket),
    )
    .unwrap();
    let log = dir.path().join("daemon.log");
    let _daemon = serve(&config, &log);
    let deadline = Instant::now() + common::PATIENCE;
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("waq is serving")
    {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            Instant::now() < deadline && !text.contains("cannot"),
            "{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let health = Command::new(bin())
        .args(["health", "--socket"])
        .arg(&socket)
        .output()
        .unwrap();
    assert!(health.status.success(), "{health:?}");
}
