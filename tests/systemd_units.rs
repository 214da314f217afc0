//! The shipped unit files: `systemd-analyze verify` is clean and the hardening scores at most
//! 2.0 ("OK") in `systemd-analyze security`. Needs systemd-analyze (CI installs it).

use std::path::Path;
use std::process::Command;

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
