//! The README's commands, run the way a reader runs them: one shell, in order, against the
//! real binary, the Cloud API simulator and a daemon.
//!
//! A fenced `sh` block preceded by `<!-- readme-test: KIND -->` is tested:
//!
//! - `env`: the variables the other blocks use. Every line must be `export NAME=...`. The test
//!   does not run it: it supplies its own values (a temporary directory, free loopback ports),
//!   so runs never collide with each other or with a reader's own try-out.
//! - `run`: run in document order, all in one `bash` process with `set -euo pipefail`, so
//!   variables and background jobs carry over as in a terminal. A command that fails fails the
//!   test, naming its README line; commands expected to fail say so (`|| echo ...`).
//! - `cleanup`: run after every `run` block (it stops the background jobs).
//!
//! Every other `sh` block must be one the test cannot run, and is checked to be one: building
//! (`cargo ...`: `cargo test` has just built the binary under test, which is put first on
//! `PATH`) and installing the service (needs root and systemd, and changes the machine).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MARKER: &str = "<!-- readme-test:";

#[derive(Debug)]
struct Block {
    /// `env`, `run`, `cleanup`, or "" for an unmarked block.
    kind: String,
    /// The README line of the opening fence.
    line: usize,
    text: String,
}

/// The fenced `sh` blocks of `markdown`, with the marker just before each (if any).
fn sh_blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut lines = markdown.lines().enumerate();
    let mut pending_kind = String::new();
    while let Some((i, line)) = lines.next() {
        let trimmed = line.trim();
        if let Some(rest) = trimmed.strip_prefix(MARKER) {
            pending_kind = rest.trim_end_matches("-->").trim().to_string();
            continue;
        }
        if let Some(info) = trimmed.strip_prefix("```") {
            let mut text = String::new();
            for (_, l) in lines.by_ref() {
                if l.trim_start().starts_with("```") {
                    break;
                }
                text.push_str(l);
                text.push('\n');
            }
            if info.trim() == "sh" {
                blocks.push(Block {
                    kind: std::mem::take(&mut pending_kind),
                    line: i + 1,
                    text,
                });
            } else {
                assert!(
                    pending_kind.is_empty(),
                    "README line {}: a readme-test marker must precede a ```sh block",
                    i + 1
                );
            }
            continue;
        }
        if !trimmed.is_empty() && !pending_kind.is_empty() {
            panic!(
                "README line {}: a readme-test marker must be followed by a ```sh block",
                i + 1
            );
        }
    }
    blocks
}

/// The names the `env` block exports.
fn env_names(block: &Block) -> Vec<String> {
    block
        .text
        .lines()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let name = l
                .strip_prefix("export ")
                .and_then(|rest| rest.split_once('='))
                .map(|(name, _)| name.trim().to_string());
            name.unwrap_or_else(|| {
                panic!(
                    "README line {}: the env block may only hold `export NAME=...` lines, not {l:?}",
                    block.line
                )
            })
        })
        .collect()
}

/// A port that was free a moment ago (it may not be by the time it is bound: see
/// `try_it_by_hand_runs`).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap()
}

/// Processes whose command line mentions `needle` (to find anything the README left running).
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

#[test]
fn every_sh_block_is_tested_or_cannot_be() {
    let blocks = sh_blocks(&readme());
    assert!(blocks.iter().filter(|b| b.kind == "env").count() == 1);
    assert!(blocks.iter().filter(|b| b.kind == "run").count() >= 5);
    assert!(blocks.iter().filter(|b| b.kind == "cleanup").count() == 1);
    for b in &blocks {
        match b.kind.as_str() {
            "env" | "run" | "cleanup" => {}
            "" => {
                let builds = b.text.contains("cargo ");
                let installs = ["systemctl", "install ", "systemd-sysusers"]
                    .iter()
                    .any(|w| b.text.contains(w));
                assert!(
                    builds || installs,
                    "README line {}: this sh block is neither tested (<!-- readme-test: run -->) \
                     nor a build or install step:\n{}",
                    b.line,
                    b.text
                );
            }
            other => panic!("README line {}: unknown readme-test kind {other:?}", b.line),
        }
    }
}

/// Runs of the README's commands on ports another process took first, before that fails the
/// test (see `try_it_by_hand_runs`).
const PORT_TRIES: usize = 5;

#[test]
fn try_it_by_hand_runs() {
    let blocks = sh_blocks(&readme());
    let env_block = blocks
        .iter()
        .find(|b| b.kind == "env")
        .expect("an env block");

    let mut script = String::from(
        "set -euo pipefail\n\
         trap 'echo \"README line $README_LINE: failed: $BASH_COMMAND\" >&2' ERR\n",
    );
    let ordered = blocks
        .iter()
        .filter(|b| b.kind == "run")
        .chain(blocks.iter().filter(|b| b.kind == "cleanup"));
    for b in ordered {
        script.push_str(&format!(
            "README_LINE={line}\necho '### README line {line}'\n{text}\n",
            line = b.line,
            text = b.text
        ));
    }
    script.push_str("echo '### done'\n");

    // The README's simulator and daemon listen where $WAQ_SIM and $WAQ_WEBHOOK say, and each
    // is given the other's address before either starts, so the ports are picked here (free
    // ones, closed again) and another test can bind one first. The README's process then
    // cannot listen and says so in its log: the whole run starts over on new ports. Nothing
    // else is retried.
    let mut taken = Vec::new();
    let run = loop {
        match run_readme(&script, env_block) {
            Ok(run) => break run,
            Err(port_taken) => {
                taken.push(port_taken);
                assert!(
                    taken.len() < PORT_TRIES,
                    "every run lost a port to another process:\n{}",
                    taken.join("\n")
                );
            }
        }
    };
    let report = format!("stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    let (stdout, stderr) = (&run.stdout, &run.stderr);

    let status = run
        .status
        .unwrap_or_else(|| panic!("the README's commands hung\n{report}"));
    assert!(
        status.success(),
        "the README's commands failed ({status})\n{report}"
    );
    assert!(stdout.contains("### done"), "{report}");
    assert!(
        run.leftovers.is_empty(),
        "the README's cleanup left processes running: {:?}\n{report}",
        run.leftovers
    );
    assert!(
        !run.waq_dir_left,
        "the cleanup block did not remove $WAQ_DIR"
    );

    // What the README says each step prints.
    for expected in [
        "ok\n",                                               // waq health
        "queued 0000000000000001",                            // the first template
        "[window_closed, field message.type, option --text]", // the refused text (on stderr)
        "`waq inbound --from '+1 415 555 0100'`",             // and the way out
        "exit code 1",
        "type          text", // waq status of the free-form text
        "\"state\":\"queued\"",
        "invalid_recipient",
        "cancelled ",
        "waq_sender_sent_last_second{sender=\"main\"}",
    ] {
        assert!(
            stdout.contains(expected) || stderr.contains(expected),
            "the README's commands did not print {expected:?}\n{report}"
        );
    }
}

/// One run of the README's commands, ended (or given up on: `status` None).
struct Run {
    status: Option<std::process::ExitStatus>,
    stdout: String,
    stderr: String,
    /// Processes the commands left running.
    leftovers: Vec<String>,
    /// Whether `$WAQ_DIR` was still there at the end.
    waq_dir_left: bool,
}

/// Runs `script` in a fresh `$WAQ_DIR` on new ports; `Err` (with what it printed) when the
/// simulator or the daemon could not listen because another process had taken its port.
fn run_readme(script: &str, env_block: &Block) -> Result<Run, String> {
    let dir = tempfile::tempdir().unwrap();
    let waq_dir = dir.path().join("try");
    std::fs::create_dir(&waq_dir).unwrap();
    let values: BTreeMap<&str, String> = [
        ("WAQ_DIR", waq_dir.display().to_string()),
        ("WAQ_SOCKET", waq_dir.join("waq.sock").display().to_string()),
        ("WAQ_SIM", format!("127.0.0.1:{}", free_port())),
        ("WAQ_WEBHOOK", format!("127.0.0.1:{}", free_port())),
    ]
    .into();
    for name in env_names(env_block) {
        assert!(
            values.contains_key(name.as_str()),
            "README line {}: the test has no value for {name}; add one here",
            env_block.line
        );
    }

    let bin = PathBuf::from(env!("CARGO_BIN_EXE_waq"));
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(script)
        .env("PATH", path)
        .env_remove("WAQ_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in &values {
        cmd.env(k, v);
    }
    // Its own process group, so that whatever it leaves running can be stopped as one.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().unwrap();
    let pgid = child.id() as i32;
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    // A lost port shows at once; without this the commands would wait for a peer that is not
    // there until the deadline.
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline || port_taken(&waq_dir).is_some() {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Anything still running (after a failure) goes now; the readers then see the end.
    let leftovers = processes_mentioning(&waq_dir.display().to_string());
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
    let _ = child.wait();
    let stdout = out_reader.join().unwrap();
    let stderr = err_reader.join().unwrap();
    if let Some(log) = port_taken(&waq_dir) {
        return Err(log);
    }
    Ok(Run {
        status,
        stdout,
        stderr,
        leftovers,
        waq_dir_left: waq_dir.exists(),
    })
}

/// The log line in `$WAQ_DIR/*.log` (where the README sends the simulator's and the daemon's
/// output) that says a port was in use, if one does.
fn port_taken(waq_dir: &Path) -> Option<String> {
    let in_use = std::io::Error::from_raw_os_error(libc::EADDRINUSE).to_string();
    std::fs::read_dir(waq_dir)
        .ok()?
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .find_map(|log| {
            log.lines()
                .find(|l| l.contains(&in_use))
                .map(str::to_string)
        })
}
