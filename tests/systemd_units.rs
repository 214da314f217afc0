//! The shipped unit files: `systemd-analyze verify` is clean and the hardening scores at most
//! 2.0 ("OK") in `systemd-analyze security` (these need systemd-analyze; CI installs it); the
//! shipped config.toml starts with what the unit gives it.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn analyze_available() -> bool {
    Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn units_in(dir: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    let service = std::fs::read_to_string(root.join("waq.service")).unwrap();
    // verify checks that ExecStart exists: point it at the binary under test.
    let service = service.replace("/usr/local/bin/waq", env!("CARGO_BIN_EXE_waq"));
    std::fs::write(dir.join("waq.service"), service).unwrap();
    std::fs::copy(root.join("waq.socket"), dir.join("waq.socket")).unwrap();
}

#[test]
fn unit_files_verify_clean() {
    if !analyze_available() {
        eprintln!("systemd-analyze is not installed; skipping (CI installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    units_in(dir.path());
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.path().join("waq.service"))
        .arg(dir.path().join("waq.socket"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("waq.service") || l.contains("waq.socket"))
        .collect();
    assert!(out.status.success() && ours.is_empty(), "verify: {stderr}");
}

#[test]
fn hardening_scores_ok() {
    if !analyze_available() {
        eprintln!("systemd-analyze is not installed; skipping (CI installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    units_in(dir.path());
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(dir.path().join("waq.service"))
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no overall score in: {text}"));
    let score: f64 = line
        .split(':')
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the score in {line:?}"));
    eprintln!("{line}");
    assert!(score <= 2.0, "exposure {score} > 2.0: {line}");
}

/// The shipped config.toml, installed as the README says, starts under the shipped unit: the
/// secrets it reads are the credentials the unit loads (`LoadCredential=`), in the unit's
/// environment (`Environment=`, its paths moved into a temporary directory) and no other.
#[test]
fn the_shipped_config_starts_with_what_the_unit_gives_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let service = std::fs::read_to_string(root.join("systemd/waq.service")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials");
    std::fs::create_dir(&creds).unwrap();
    let socket = dir.path().join("waq.sock");
    let log = dir.path().join("waq.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_waq"));
    cmd.arg("serve")
        .arg("--config")
        .arg(root.join("config.toml"))
        .env_clear()
        .env("CREDENTIALS_DIRECTORY", &creds)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    for line in service.lines() {
        if let Some(credential) = line.strip_prefix("LoadCredential=") {
            let (name, _) = credential.split_once(':').unwrap();
            std::fs::write(creds.join(name), "test-secret\n").unwrap();
        } else if let Some(assignment) = line.strip_prefix("Environment=") {
            let (name, value) = assignment.split_once('=').unwrap();
            match name {
                "WAQ__STATE_DIR" => cmd.env(name, dir.path().join("state")),
                "WAQ__SOCKET__PATH" => cmd.env(name, &socket),
                _ => cmd.env(name, value),
            };
        }
    }
    let mut daemon = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let served = loop {
        if let Some(status) = daemon.try_wait().unwrap() {
            break Err(format!("it exited: {status}"));
        }
        if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
            break Ok(());
        }
        if Instant::now() > deadline {
            break Err("no socket within 30 s".to_string());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    unsafe {
        libc::kill(daemon.id() as i32, libc::SIGTERM);
    }
    let status = daemon.wait().unwrap();
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        served.is_ok(),
        "the daemon did not serve: {served:?}\n{log}"
    );
    assert!(status.success(), "{status}\n{log}");
}
