//! The client examples in `examples/`, run as a user would run them, against a real daemon
//! that sends to the Cloud API simulator: each must exit 0 and print what its comments promise.
//! Python and curl are required (CI installs them); Node.js runs when `node` is installed.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::Daemon;
use waq::sim::{self, SimHandle};

/// A simulator on a free port, with the runtime that serves it.
struct Sim {
    handle: Option<SimHandle>,
    rt: tokio::runtime::Runtime,
}

impl Sim {
    fn start() -> Sim {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        // Two business numbers, for a daemon with a second sender.
        let cfg = common::two_numbers();
        let handle = rt
            .block_on(sim::start(cfg, "127.0.0.1:0".parse().unwrap()))
            .unwrap();
        Sim {
            handle: Some(handle),
            rt,
        }
    }

    fn base_url(&self) -> String {
        self.handle.as_ref().unwrap().base_url()
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            self.rt.block_on(h.shutdown());
        }
    }
}

/// A daemon whose sender `main` (token `common::TOKEN`) sends to `sim`.
fn daemon(sim: &Sim) -> Daemon {
    Daemon::builder()
        .set("api", &format!("base_url = {:?}", sim.base_url()))
        .start()
}

fn example(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

fn available(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `cmd` to completion (bounded: an example that hangs fails the test).
fn run(cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{cmd:?} did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// Asserts exit 0 and that stdout has every one of `expected`; returns stdout.
fn check(name: &str, out: &Output, expected: &[&str]) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{name} exited {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    for e in expected {
        assert!(
            stdout.contains(e),
            "{name}: no {e:?} in its output:\n{stdout}\nstderr:\n{stderr}"
        );
    }
    stdout
}

/// The polling loop of each example stops at the first state in which Meta has the message.
const ACCEPTED: [&str; 3] = ["state: sent", "state: delivered", "state: read"];

fn assert_accepted(name: &str, stdout: &str) {
    assert!(
        ACCEPTED.iter().any(|s| stdout.contains(s)),
        "{name}: the message never reached Meta:\n{stdout}"
    );
}

#[test]
fn python_client() {
    assert!(available("python3"), "python3 is required (CI installs it)");
    let sim = Sim::start();
    let d = daemon(&sim);
    let out = run(Command::new("python3")
        .arg(example("python_client.py"))
        .arg("--socket")
        .arg(&d.socket)
        .arg("--to")
        .arg("+1 415 555 0100"));
    let stdout = check(
        "python_client.py",
        &out,
        &[
            "enqueued ",
            "free-form to a closed window: 422 window_closed (field message.type)",
        ],
    );
    assert_accepted("python_client.py", &stdout);
}

#[test]
fn curl_client() {
    assert!(available("curl"), "curl is required (CI installs it)");
    let sim = Sim::start();
    let d = daemon(&sim);
    let out = run(Command::new("bash")
        .arg(example("curl_client.sh"))
        .arg(&d.socket)
        .arg("+1 415 555 0102"));
    let stdout = check(
        "curl_client.sh",
        &out,
        &["enqueued ", r#""code":"too_long""#, "message.text.body"],
    );
    assert_accepted("curl_client.sh", &stdout);
}

#[test]
fn curl_client_finds_the_socket_in_the_environment() {
    assert!(available("curl"), "curl is required (CI installs it)");
    let sim = Sim::start();
    let d = daemon(&sim);
    let out = run(Command::new("bash")
        .arg(example("curl_client.sh"))
        .env("WAQ_SOCKET", &d.socket));
    let stdout = check("curl_client.sh", &out, &["enqueued "]);
    assert_accepted("curl_client.sh", &stdout);
}

#[test]
fn node_client() {
    if !available("node") {
        eprintln!("node is not installed; skipping the Node.js example");
        return;
    }
    let sim = Sim::start();
    let d = daemon(&sim);
    let out = run(Command::new("node")
        .arg(example("node_client.js"))
        .arg(&d.socket)
        .arg("+1 415 555 0101"));
    let stdout = check(
        "node_client.js",
        &out,
        &[
            "enqueued ",
            "bad recipient: 422 invalid_recipient (field to)",
        ],
    );
    assert_accepted("node_client.js", &stdout);
}

#[test]
fn examples_report_an_unreachable_daemon() {
    // No daemon: the clients must fail, not hang or claim success.
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("none.sock");
    if available("python3") {
        let out = run(Command::new("python3")
            .arg(example("python_client.py"))
            .arg("--socket")
            .arg(&socket));
        assert_eq!(out.status.code(), Some(3), "{out:?}");
    }
    if available("curl") {
        let out = run(Command::new("bash")
            .arg(example("curl_client.sh"))
            .arg(&socket));
        // 3 as the other clients, not curl's own code (7).
        assert_eq!(out.status.code(), Some(3), "{out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("waq unreachable"),
            "{out:?}"
        );
    }
    if available("node") {
        let out = run(Command::new("node")
            .arg(example("node_client.js"))
            .arg(&socket));
        assert_eq!(out.status.code(), Some(3));
    }
}

#[test]
fn the_clients_name_a_sender_when_there_are_several() {
    assert!(available("python3") && available("curl"));
    let sim = Sim::start();
    let d = Daemon::builder()
        .set("api", &format!("base_url = {:?}", sim.base_url()))
        .toml(&common::sender_toml(
            "second",
            common::SECOND_NUMBER,
            common::TOKEN,
            20,
        ))
        .start();
    let python = run(Command::new("python3")
        .arg(example("python_client.py"))
        .args(["--socket".as_ref(), d.socket.as_os_str()])
        .args(["--to", "+1 415 555 0104", "--sender", "second"]));
    let stdout = check(
        "python_client.py --sender second",
        &python,
        &["free-form to a closed window: 422 window_closed"],
    );
    assert_accepted("python_client.py", &stdout);
    let curl = run(Command::new("bash")
        .arg(example("curl_client.sh"))
        .arg(&d.socket)
        .args(["+1 415 555 0105", "second"]));
    let stdout = check("curl_client.sh", &curl, &[r#""code":"too_long""#]);
    assert_accepted("curl_client.sh", &stdout);
    if available("node") {
        let node = run(Command::new("node")
            .arg(example("node_client.js"))
            .arg(&d.socket)
            .args(["+1 415 555 0106", "second"]));
        let stdout = check(
            "node_client.js",
            &node,
            &["bad recipient: 422 invalid_recipient"],
        );
        assert_accepted("node_client.js", &stdout);
    }
    let sent = d
        .get("/v1/messages?sender=second&state=sent,delivered,read")
        .json();
    let n = sent["messages"].as_array().unwrap().len();
    assert!(n >= 2, "the clients' messages went from `second`: {sent}");
}
