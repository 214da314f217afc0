//! The client commands against a real daemon: output, `--json`, and exit codes
//! (0 ok, 1 the daemon said no, 2 usage, 3 no daemon).

mod common;

use std::process::{Command, Output};

use common::{bin, Daemon};
use serde_json::Value;

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited by signal")
}

fn json(o: &Output) -> Value {
    serde_json::from_str(stdout(o).trim()).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

#[test]
fn send_status_ls_cancel() {
    let d = Daemon::start();
    let sent = d.waq(&[
        "send",
        "--to",
        "+1 415 555 1234",
        "--template",
        "hello_world",
        "--param",
        "John",
        "--json",
    ]);
    assert_eq!(code(&sent), 0, "{}", stderr(&sent));
    let answer = json(&sent);
    assert_eq!(answer["state"], "queued");
    let id = answer["id"].as_str().unwrap().to_string();

    let human = d.waq(&[
        "send",
        "--to",
        "+14155551234",
        "--template",
        "hello_world",
        "--key",
        "k1",
    ]);
    assert_eq!(code(&human), 0);
    assert!(stdout(&human).starts_with("queued "), "{}", stdout(&human));
    // Meta refuses an empty parameter, so the enqueue does.
    let empty = d.waq(&[
        "send",
        "--to",
        "+14155551234",
        "--template",
        "hello_world",
        "--param",
        "",
    ]);
    assert_ne!(code(&empty), 0, "{}", stdout(&empty));
    assert!(
        stderr(&empty).contains("message.template.components[0].parameters[0].text"),
        "{}",
        stderr(&empty)
    );
    let replay = d.waq(&[
        "send",
        "--to",
        "+14155551234",
        "--template",
        "hello_world",
        "--key",
        "k1",
    ]);
    assert_eq!(code(&replay), 0);
    // The id is the second word, as after `queued`, for `cut -d' ' -f2`.
    assert_eq!(
        stdout(&replay).split(' ').nth(1),
        stdout(&human).trim().split(' ').nth(1),
        "{}",
        stdout(&replay)
    );
    assert!(stdout(&replay).starts_with("duplicate "));

    let status = d.waq(&["status", &id]);
    assert_eq!(code(&status), 0, "{}", stderr(&status));
    let text = stdout(&status);
    assert!(
        text.contains(&id) && text.contains("queued") && text.contains("14155551234"),
        "{text}"
    );
    // A history entry whose detail is its state shows the state once.
    let queued_entry = text
        .lines()
        .find(|l| l.starts_with("  ") && l.contains("queued"))
        .unwrap_or_else(|| panic!("no history entry: {text}"));
    assert_eq!(queued_entry.matches("queued").count(), 1, "{text}");
    assert!(!queued_entry.ends_with(' '), "{queued_entry:?}");
    let status = d.waq(&["status", &id, "--json"]);
    assert_eq!(json(&status)["type"], "template");

    let ls = d.waq(&["ls"]);
    assert_eq!(code(&ls), 0);
    assert!(stdout(&ls).contains(&id));
    // Every row keeps the header's columns, and the sender's name, of any length, comes last.
    let table = stdout(&ls);
    let mut lines = table.lines();
    let header = lines.next().unwrap_or_default();
    assert!(header.ends_with("  SENDER"), "{table}");
    let updated_at = header.find("UPDATED").unwrap();
    for row in lines {
        assert_eq!(row.get(updated_at..updated_at + 2), Some("20"), "{table}");
        assert!(row.ends_with("  main"), "{table}");
    }
    let ls = d.waq(&["ls", "--limit", "1", "--json"]);
    let page = json(&ls);
    assert_eq!(page["messages"].as_array().unwrap().len(), 1);
    assert!(page["next_cursor"].is_string());
    let all = d.waq(&["ls", "--limit", "1", "--all", "--json"]);
    assert_eq!(json(&all)["messages"].as_array().unwrap().len(), 2);
    // Following the cursor itself, `--all` gives no hint to follow it.
    let page = d.waq(&["ls", "--limit", "1"]);
    assert!(
        stderr(&page).contains("(more: --cursor"),
        "{}",
        stderr(&page)
    );
    let all = d.waq(&["ls", "--limit", "1", "--all"]);
    assert_eq!(stdout(&all).lines().count(), 3, "{}", stdout(&all));
    assert!(!stderr(&all).contains("more:"), "{}", stderr(&all));
    // A filter that matches nothing says so, beside the header.
    let none = d.waq(&["ls", "--state", "failed"]);
    assert_eq!(code(&none), 0, "{}", stderr(&none));
    assert_eq!(stdout(&none).lines().count(), 1, "{}", stdout(&none));
    assert!(
        stderr(&none).contains("(no messages match)"),
        "{}",
        stderr(&none)
    );
    assert!(!stderr(&all).contains("no messages"), "{}", stderr(&all));

    let cancel = d.waq(&["cancel", &id]);
    assert_eq!(code(&cancel), 0, "{}", stderr(&cancel));
    assert_eq!(stdout(&cancel).trim(), format!("cancelled {id}"));
    let ls = d.waq(&["ls", "--state", "cancelled", "--json"]);
    assert_eq!(json(&ls)["messages"][0]["id"], id.as_str());

    // Exit 1: the daemon said no, and why.
    let again = d.waq(&["cancel", &id]);
    assert_eq!(code(&again), 1);
    assert!(
        stderr(&again).contains("not_cancellable"),
        "{}",
        stderr(&again)
    );
    let again = d.waq(&["cancel", &id, "--json"]);
    assert_eq!(code(&again), 1);
    assert_eq!(json(&again)["error"]["code"], "not_cancellable");
}

#[test]
fn a_refusal_exits_1_with_code_and_field() {
    let d = Daemon::start();
    let o = d.waq(&["send", "--to", "12ab", "--text", "hi"]);
    assert_eq!(code(&o), 1);
    let err = stderr(&o);
    assert!(
        err.contains("invalid_recipient") && err.contains("field to"),
        "{err}"
    );

    let o = d.waq(&["send", "--to", "+14155551234", "--text", "hi"]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("window_closed"));

    let o = d.waq(&["window", "+1 415 555 1234"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        stdout(&o).trim(),
        "window of 14155551234 with main closed: they have not written",
        "{}",
        stderr(&o)
    );

    let o = d.waq(&["inbound", "--from", "+14155551234"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("open until"), "{}", stdout(&o));
    let w = d.waq(&["window", "+14155551234", "--sender", "main", "--json"]);
    assert_eq!(code(&w), 0, "{}", stderr(&w));
    let v: serde_json::Value = serde_json::from_str(&stdout(&w)).unwrap();
    assert_eq!(v["window_open"], true, "{v}");
    let w = d.waq(&["window", "+14155551234", "--sender", "nobody"]);
    assert_eq!(code(&w), 1);
    assert!(stderr(&w).contains("unknown_sender"), "{}", stderr(&w));
    // Closed by time: since when, and the customer's last message.
    let two_days_ago = waq::model::format_time(waq::model::now_ms() - 2 * 86_400_000);
    let c = d.waq(&["inbound", "--from", "+14155550199", "--at", &two_days_ago]);
    assert_eq!(code(&c), 0, "{}", stderr(&c));
    let said = stdout(&c);
    assert!(
        said.starts_with(
            "window of 14155550199 with main closed: free-form messages went out until "
        ) && said.contains(&format!(
            "(last inbound {two_days_ago}, Meta's window until "
        )),
        "{said}"
    );
    assert!(
        stdout(&o).contains("; free-form messages are sent until 20"),
        "{}",
        stdout(&o)
    );
    let o = d.waq(&["send", "--to", "+14155551234", "--text", "hi"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));

    let o = d.waq(&["status", "0000000000abcdef"]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("not_found"));
}

#[test]
fn a_refused_send_names_the_option_behind_the_field() {
    let d = Daemon::start();
    let send = |args: &[&str]| {
        let mut full = vec!["send", "--to", "+14155551234"];
        full.extend_from_slice(args);
        d.waq(&full)
    };
    let template = ["--template", "hello_world"];
    for (args, field, option) in [
        (&["--at", "tomorrow"][..], "send_at", "--at"),
        (&["--at", "9999-12-31T23:59:59Z"], "send_at", "--at"),
        (&["--ttl", "0"], "ttl_s", "--ttl"),
        (&["--ttl", "-5"], "ttl_s", "--ttl"),
        (&["--ttl", "abc"], "ttl_s", "--ttl"),
        (&["--ttl", "1.5"], "ttl_s", "--ttl"),
        (&["--lang", ""], "message.template.language.code", "--lang"),
        (
            &["--param", ""],
            "message.template.components[0].parameters[0].text",
            "--param",
        ),
        (&["--key", ""], "idempotency_key", "--key"),
        (&["--sender", "nobody"], "sender", "--sender"),
        (
            &["--fallback-template", ""],
            "fallback_template.name",
            "--fallback-template",
        ),
        (
            &["--fallback-template", "hello_world", "--fallback-lang", ""],
            "fallback_template.language.code",
            "--fallback-lang",
        ),
    ] {
        let mut full = template.to_vec();
        full.extend_from_slice(args);
        let o = send(&full);
        assert_eq!(code(&o), 1, "{args:?}: {}", stderr(&o));
        let named = format!("field {field}, option {option}]");
        assert!(stderr(&o).contains(&named), "{args:?}: {}", stderr(&o));
        // --json prints the daemon's answer as it is.
        full.push("--json");
        let o = send(&full);
        assert_eq!(code(&o), 1);
        let answer = json(&o);
        assert_eq!(answer["error"]["field"], field, "{answer}");
        assert!(!stdout(&o).contains("option"), "{}", stdout(&o));
    }
    for (args, field, option) in [
        (&["--text", ""][..], "message.text.body", "--text"),
        (
            &["--message", r#"{"type":"text"}"#],
            "message.text",
            "--message",
        ),
    ] {
        let o = send(args);
        assert_eq!(code(&o), 1, "{args:?}: {}", stderr(&o));
        let named = format!("field {field}, option {option}]");
        assert!(stderr(&o).contains(&named), "{args:?}: {}", stderr(&o));
    }
    let o = d.waq(&["send", "--to", "12", "--text", "hi"]);
    assert!(
        stderr(&o).contains("field to, option --to]"),
        "{}",
        stderr(&o)
    );

    // A closed window: the way out, in options.
    let o = d.waq(&["send", "--to", "+1 415 555 1234", "--text", "hi"]);
    assert_eq!(code(&o), 1);
    let err = stderr(&o);
    assert!(
        err.contains("[window_closed, field message.type, option --text]"),
        "{err}"
    );
    assert!(err.contains("--fallback-template NAME"), "{err}");
    assert!(
        err.contains("`waq inbound --from '+1 415 555 1234'`"),
        "{err}"
    );
    let o = d.waq(&["send", "--to", "+14155551234", "--text", "hi", "--json"]);
    assert_eq!(json(&o)["error"]["code"], "window_closed");
    assert!(!stdout(&o).contains("waq inbound"), "{}", stdout(&o));
}

#[test]
fn usage_errors_exit_2() {
    let d = Daemon::start();
    for args in [
        vec!["send", "--text", "hi"],
        vec!["send", "--to", "+14155551234"],
        vec![
            "send",
            "--to",
            "+14155551234",
            "--text",
            "a",
            "--template",
            "b",
        ],
        vec![
            "send",
            "--to",
            "+14155551234",
            "--text",
            "a",
            "--metadata",
            "{oops",
        ],
        vec!["ls", "--limit", "0"],
        vec!["ls", "--limit", "-1"],
        vec!["window", ""],
        vec!["frobnicate"],
        vec!["status"],
    ] {
        let o = d.waq(&args);
        assert_eq!(code(&o), 2, "{args:?}: {}", stderr(&o));
    }
    // A negative page size gets the range, not "unexpected argument".
    let o = d.waq(&["ls", "--limit", "-1"]);
    assert!(
        stderr(&o).contains("-1 is not in 1..=1000"),
        "{}",
        stderr(&o)
    );
    // A name other tools use points to waq's command, not to one spelled alike (`health`).
    let o = d.waq(&["watch"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("similar subcommand exists: 'stats --watch'"),
        "{}",
        stderr(&o)
    );
}

/// `--metadata` reaches the daemon as written, and `status` and `ls --all --json` show what the
/// daemon echoes: numbers as their text, not as doubles.
#[test]
fn metadata_is_sent_and_shown_as_written() {
    let d = Daemon::start();
    let echoed = r#"{"order":123456789012345678901234567890,"price":1.10,"name":"José"}"#;
    let sent = d.waq(&[
        "send",
        "--to",
        "+14155551234",
        "--template",
        "hello_world",
        "--at",
        &common::parked_until(),
        "--metadata",
        r#"{"order": 123456789012345678901234567890, "price": 1.10, "name": "Jos\u00e9"}"#,
    ]);
    assert_eq!(code(&sent), 0, "{}", stderr(&sent));
    let id = stdout(&sent).split_whitespace().nth(1).unwrap().to_string();

    let status = d.waq(&["status", &id]);
    assert_eq!(code(&status), 0, "{}", stderr(&status));
    let line = stdout(&status)
        .lines()
        .find(|l| l.starts_with("metadata"))
        .map(str::to_string);
    assert_eq!(
        line,
        Some(format!("metadata      {echoed}")),
        "{}",
        stdout(&status)
    );
    let status = d.waq(&["status", &id, "--json"]);
    assert!(stdout(&status).contains(echoed), "{}", stdout(&status));
    let all = d.waq(&["ls", "--all", "--json"]);
    assert_eq!(code(&all), 0, "{}", stderr(&all));
    assert!(stdout(&all).contains(echoed), "{}", stdout(&all));
    assert_eq!(json(&all)["messages"][0]["id"], id.as_str());
}

/// Runs `waq ARGS --socket <a path where nothing is>`: exit 3 shows the daemon was asked.
fn without_daemon(args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    Command::new(bin())
        .args(args)
        .arg("--socket")
        .arg(dir.path().join("absent.sock"))
        .env_remove("WAQ_SOCKET")
        .output()
        .unwrap()
}

#[test]
fn send_refuses_an_option_without_the_one_it_needs() {
    let text_message = r#"{"type":"text","text":{"body":"hi"}}"#;
    for (args, option, needs) in [
        (
            &["--template", "hello_world", "--preview-url"][..],
            "--preview-url",
            "--text",
        ),
        (
            &["--message", text_message, "--preview-url"],
            "--preview-url",
            "--text",
        ),
        (&["--text", "hi", "--lang", "de"], "--lang", "--template"),
        (
            &["--message", text_message, "--lang", "de"],
            "--lang",
            "--template",
        ),
        (&["--text", "hi", "--param", "x"], "--param", "--template"),
        (
            &["--message", text_message, "--param", "x"],
            "--param",
            "--template",
        ),
        (
            &["--template", "hello_world", "--fallback-lang", "de"],
            "--fallback-lang",
            "--fallback-template",
        ),
        (
            &["--template", "hello_world", "--fallback-param", "x"],
            "--fallback-param",
            "--fallback-template",
        ),
    ] {
        let mut full = vec!["send", "--to", "+14155551234"];
        full.extend_from_slice(args);
        let o = without_daemon(&full);
        // 2, not 3: refused before the daemon is asked.
        assert_eq!(code(&o), 2, "{args:?}: {}", stderr(&o));
        let needed = format!("{option} needs {needs}");
        assert!(stderr(&o).contains(&needed), "{args:?}: {}", stderr(&o));
    }
    // With what they need, the same options go through to the daemon.
    let o = without_daemon(&[
        "send",
        "--to",
        "+14155551234",
        "--text",
        "https://example.com",
        "--preview-url",
        "--fallback-template",
        "order_update",
        "--fallback-lang",
        "de",
        "--fallback-param",
        "x",
    ]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    let o = without_daemon(&[
        "send",
        "--to",
        "+14155551234",
        "--template",
        "order_update",
        "--lang",
        "de",
        "--param",
        "x",
    ]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
}

#[test]
fn a_malformed_id_is_a_usage_error_without_asking_the_daemon() {
    for command in ["status", "cancel", "retry"] {
        for id in [
            "",
            "12",
            "000000000000000g",
            "00000000000000001",
            "0000000000000001/retry",
        ] {
            let o = without_daemon(&[command, id]);
            assert_eq!(code(&o), 2, "{command} {id:?}: {}", stderr(&o));
            assert!(
                stderr(&o).contains("16 hex digits"),
                "{command} {id:?}: {}",
                stderr(&o)
            );
        }
        let o = without_daemon(&[command, ""]);
        assert!(stderr(&o).contains("the id is empty"), "{}", stderr(&o));
        // What the daemon takes is let through, upper case included.
        for id in ["0000000000000001", "00000000000000AB"] {
            let o = without_daemon(&[command, id]);
            assert_eq!(code(&o), 3, "{command} {id}: {}", stderr(&o));
        }
    }
}

#[test]
fn a_socket_path_too_long_for_a_unix_socket_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    // A path of `len` bytes in `dir`.
    let path = |len: usize| {
        let base = dir.path().as_os_str().len() + 1;
        dir.path().join("s".repeat(len - base))
    };
    let run = |socket: &std::path::Path, from_env: bool| {
        let mut c = Command::new(bin());
        c.arg("health");
        if from_env {
            c.env("WAQ_SOCKET", socket);
        } else {
            c.arg("--socket").arg(socket).env_remove("WAQ_SOCKET");
        }
        c.output().unwrap()
    };
    for from_env in [false, true] {
        let o = run(&path(108), from_env);
        assert_eq!(code(&o), 2, "{}", stderr(&o));
        assert!(
            stderr(&o).contains("108 bytes long") && stderr(&o).contains("at most 107 bytes"),
            "{}",
            stderr(&o)
        );
        // The longest that fits is dialled: nothing there, so exit 3.
        let o = run(&path(107), from_env);
        assert_eq!(code(&o), 3, "{}", stderr(&o));
    }
}

#[test]
fn no_daemon_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("absent.sock");
    for args in [
        vec!["health"],
        vec!["stats", "--json"],
        vec!["status", "0000000000000001"],
    ] {
        let o = Command::new(bin())
            .args(&args)
            .arg("--socket")
            .arg(&socket)
            .env_remove("WAQ_SOCKET")
            .output()
            .unwrap();
        assert_eq!(code(&o), 3, "{args:?}");
        assert!(stderr(&o).contains("absent.sock"), "{}", stderr(&o));
    }
}

#[test]
fn a_socket_path_that_is_a_file_or_a_directory_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(&file, "state_dir = \"x\"\n").unwrap();
    for (path, kind) in [(file.as_path(), "file"), (dir.path(), "directory")] {
        let o = Command::new(bin())
            .args(["health", "--socket"])
            .arg(path)
            .env_remove("WAQ_SOCKET")
            .output()
            .unwrap();
        assert_eq!(code(&o), 3, "{}", stderr(&o));
        assert!(
            stderr(&o).contains(&format!("is not a socket but a {kind}")),
            "{}",
            stderr(&o)
        );
    }
}

#[test]
fn stats_and_health() {
    let d = Daemon::start();
    let o = d.waq(&["health"]);
    assert_eq!(code(&o), 0);
    assert_eq!(stdout(&o).trim(), "ok");
    let o = d.waq(&["stats"]);
    assert_eq!(code(&o), 0);
    assert!(stdout(&o).contains("queue depth"), "{}", stdout(&o));
    let o = d.waq(&["stats", "--json"]);
    assert_eq!(json(&o)["queue_depth"], 0);
    let o = d.waq(&["sender", "resume", "nobody"]);
    assert_eq!(code(&o), 1);
}

#[test]
fn health_counts_the_messages_a_sender_no_longer_configured_holds() {
    let second = common::sender_toml("second", "120000000000002", "t", 10);
    let d = Daemon::builder().toml(&second).start();
    let ids: Vec<String> = (0..2)
        .map(|n| {
            let mut r = common::parked(common::template_request(&format!("+1415555020{n}")));
            r["sender"] = "second".into();
            d.enqueue(&r)
        })
        .collect();
    // With two senders, a command that leaves out the sender is told which option to add.
    let o = d.waq(&["window", "+14155550200"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("[missing_field, field sender, option --sender]"),
        "{}",
        stderr(&o)
    );
    let o = d.waq(&["ls", "--state", "nonsense"]);
    assert!(
        stderr(&o).contains("field state, option --state]"),
        "{}",
        stderr(&o)
    );
    d.write_config(&d.config_text().replace(&second, ""));
    d.sighup();
    d.wait_for_log("configuration reloaded");
    let o = d.waq(&["health"]);
    assert_eq!(
        stdout(&o).trim(),
        "degraded: second not configured, holding 2 queued messages"
    );
    assert_eq!(code(&o), 1, "degraded");
    let o = d.waq(&["health", "--json"]);
    assert_eq!(code(&o), 1, "degraded");
    assert_eq!(json(&o)["status"], "degraded");
    let o = d.waq(&["cancel", &ids[0]]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = d.waq(&["health"]);
    assert_eq!(
        stdout(&o).trim(),
        "degraded: second not configured, holding 1 queued message"
    );
}

/// A variable with one underscore after WAQ is no override: `waq serve` says so at start,
/// but not of the variables the project uses otherwise, such as the clients' `WAQ_SOCKET`.
#[test]
fn serve_warns_of_a_waq_variable_spelt_with_one_underscore() {
    let mut d = Daemon::builder()
        .env("WAQ_DISPATCH_MAX_IN_FLIGHT", "0")
        .env("WAQ_SOCKET", "/nonexistent/waq.sock")
        .env("WAQ_SIM__TOKEN", "x")
        .start();
    // Logged before the daemon serves, which `start` waited for.
    let log = d.log();
    assert!(
        log.contains("WARN")
            && log.contains("WAQ_DISPATCH_MAX_IN_FLIGHT is not read")
            && log.contains("overrides are spelled WAQ__SECTION__KEY")
            && log.contains("was WAQ__DISPATCH__MAX_IN_FLIGHT meant?"),
        "{log}"
    );
    assert!(!log.contains("WAQ_SOCKET is not"), "{log}");
    assert!(!log.contains("WAQ_SIM__TOKEN is not"), "{log}");
    assert!(d.sigterm().success());
}

/// A `*_file` path that starts with `${CREDENTIALS_DIRECTORY}` reads the credential systemd's
/// `LoadCredential=` put there, whatever the unit is called; without the variable the daemon
/// does not start, and says where it comes from.
#[test]
fn serve_reads_a_secret_file_under_the_credentials_directory() {
    let creds = tempfile::tempdir().unwrap();
    std::fs::write(creds.path().join("wa_access_token"), "test-token\n").unwrap();
    let sender = "[[senders]]\nname = \"main\"\nphone_number_id = \"120000000000001\"\n\
                  token_file = \"${CREDENTIALS_DIRECTORY}/wa_access_token\"";
    let mut d = Daemon::builder()
        .without_default_sender()
        .toml(sender)
        .env("CREDENTIALS_DIRECTORY", creds.path().to_str().unwrap())
        .start();
    assert_eq!(d.get("/v1/health").status, 200);
    assert!(d.sigterm().success());

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("waq.toml");
    std::fs::write(&config, format!("state_dir = \"state\"\n{sender}\n")).unwrap();
    let o = Command::new(bin())
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap();
    assert_eq!(code(&o), 2);
    let err = stderr(&o);
    assert!(
        err.contains("senders[0].token_file")
            && err.contains("$CREDENTIALS_DIRECTORY, which is not set")
            && err.contains("LoadCredential="),
        "{err}"
    );
}

/// `WAQ__API=x` names `api` as a section and the form of its variables, not a Rust type.
#[test]
fn serve_says_a_section_set_from_the_environment_is_a_section() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("waq.toml");
    std::fs::write(
        &config,
        "state_dir = \"state\"\n[[senders]]\nname = \"main\"\nphone_number_id = \"1\"\ntoken = \"t\"\n",
    )
    .unwrap();
    for section in ["API", "DISPATCH", "WEBHOOK"] {
        let var = format!("WAQ__{section}");
        let o = Command::new(bin())
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env(&var, "x")
            .output()
            .unwrap();
        assert_eq!(code(&o), 2);
        let err = stderr(&o);
        assert!(
            err.contains("is a section, not a key")
                && err.contains(&format!("WAQ__{section}__KEY"))
                && !err.contains("struct"),
            "{err}"
        );
    }
}

#[test]
fn serve_with_a_bad_config_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let o = Command::new(bin())
        .arg("serve")
        .arg("--config")
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "state_dir = \"x\"\n[[senders]]\nname = \"main\"\nphone_number_id = \"1\"\ntoken = \"t\"\nmps = 0\n",
    )
    .unwrap();
    let o = Command::new(bin())
        .arg("serve")
        .arg("--config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("senders[0].mps"), "{}", stderr(&o));
    // Where the value came from, as for a type error.
    let from_file = format!("(in {})", bad.display());
    assert!(stderr(&o).contains(&from_file), "{}", stderr(&o));

    let serve = |config: &std::path::Path, env: &[(&str, &str)]| {
        let mut cmd = Command::new(bin());
        cmd.arg("serve").arg("--config").arg(config);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let o = serve(dir.path(), &[]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("is a directory"), "{}", stderr(&o));

    // A boolean, a fraction or quoted digits are not numbers, in the file or in a variable.
    let ok = std::fs::read_to_string(&bad)
        .unwrap()
        .replace("mps = 0", "");
    for line in ["mps = true", "mps = 80.9", "mps = 0.4", "mps = \"80\""] {
        std::fs::write(&bad, format!("{ok}{line}\n")).unwrap();
        let o = serve(&bad, &[]);
        assert_eq!(code(&o), 2, "{line}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains("senders[0].mps") && err.contains("expected an integer"),
            "{line}: {err}"
        );
        assert!(err.contains(&from_file), "{line}: {err}");
    }
    std::fs::write(&bad, &ok).unwrap();
    for (var, value, says) in [
        (
            "WAQ__DISPATCH__MAX_IN_FLIGHT",
            "true",
            "expected an integer",
        ),
        ("WAQ__DISPATCH__MAX_IN_FLIGHT", "2.5", "expected an integer"),
        ("WAQ__STORE__FLUSH_EVERY_MS", "0.4", "expected an integer"),
        (
            "WAQ__SENDERS__0__MPS",
            "0",
            "[[senders]] cannot be set from the environment",
        ),
    ] {
        let o = serve(&bad, &[(var, value)]);
        assert_eq!(code(&o), 2, "{var}={value}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains(says) && err.contains(var),
            "{var}={value}: {err}"
        );
    }
}

#[test]
fn serve_with_a_zero_cache_exits_2_instead_of_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("waq.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {:?}\n[socket]\npath = {:?}\n[[senders]]\nname = \"main\"\nphone_number_id = \"1\"\ntoken = \"t\"\n[store]\ncache_capacity_mb = 0\n",
            dir.path().join("state"),
            dir.path().join("waq.sock"),
        ),
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_waq"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("store.cache_capacity_mb") && !stderr(&o).contains("panicked"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn serve_with_a_proxy_it_cannot_use_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("waq.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {:?}\n[socket]\npath = {:?}\n[[senders]]\nname = \"main\"\nphone_number_id = \"1\"\ntoken = \"t\"\n",
            dir.path().join("state"),
            dir.path().join("waq.sock"),
        ),
    )
    .unwrap();
    let o = Command::new(bin())
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env("HTTPS_PROXY", "socks5://user:secret@127.0.0.1:1080")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .output()
        .unwrap();
    // Not a daemon that runs and never sends: it stops at once and says why.
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("http:// proxies only"),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("secret"), "{}", stderr(&o));
}

#[test]
fn a_closed_stderr_does_not_crash_a_command() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("none.sock");
    // stderr is a pipe whose reader is gone before the command writes its error.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let status = Command::new(bin())
        .args(["send", "--socket"])
        .arg(&socket)
        .args(["--to", "+14155551162", "--text", "hi"])
        .stderr(writer)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(3), "{status}");
}

/// A server on a Unix socket in `dir` that is not waq: it answers every request with
/// `response` (raw HTTP) and closes the connection. It runs until the test process ends.
fn fake_server(dir: &std::path::Path, response: Vec<u8>) -> std::path::PathBuf {
    use std::io::{BufRead, BufReader, Read, Write};
    let socket = dir.join("other.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let mut reader = BufReader::new(conn);
            // The whole request is read first: closing on unread bytes would reset the
            // connection under the answer.
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some((name, value)) = line.split_once(':') {
                    if name.eq_ignore_ascii_case("content-length") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let _ = reader.get_mut().write_all(&response);
        }
    });
    socket
}

/// A whole answer with `status` (e.g. `200 OK`) and a JSON `body`.
fn answering(status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn waq_on(socket: &std::path::Path, args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .arg("--socket")
        .arg(socket)
        .env_remove("WAQ_SOCKET")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn a_json_answer_that_is_not_waqs_exits_3() {
    const ID: &str = "0000000000000001";
    let dir = tempfile::tempdir().unwrap();
    let send = ["send", "--to", "14155550100", "--template", "hello_world"];
    // A success without the fields the command reads, as any JSON service would answer.
    let foo = fake_server(dir.path(), answering("200 OK", r#"{"foo":1}"#));
    // Docker's Engine API: JSON errors, but not waq's envelope.
    let docker_dir = tempfile::tempdir().unwrap();
    let docker = fake_server(
        docker_dir.path(),
        answering("404 Not Found", r#"{"message":"page not found"}"#),
    );
    let cases: Vec<(&std::path::Path, Vec<&str>)> = vec![
        (&foo, send.to_vec()),
        (&foo, [&send[..], &["--json"]].concat()),
        (&foo, vec!["cancel", ID]),
        (&foo, vec!["cancel", ID, "--json"]),
        (&foo, vec!["retry", ID]),
        (&foo, vec!["status", ID]),
        (&foo, vec!["ls"]),
        (&foo, vec!["ls", "--all", "--json"]),
        (&foo, vec!["stats"]),
        (&foo, vec!["stats", "--watch", "--json"]),
        (&foo, vec!["health"]),
        (&foo, vec!["health", "--json"]),
        (&foo, vec!["window", "14155550100"]),
        (&foo, vec!["inbound", "--from", "14155550100"]),
        (&foo, vec!["sender", "resume", "main"]),
        (&foo, vec!["events"]),
        (&docker, vec!["ls"]),
        (&docker, vec!["ls", "--json"]),
        (&docker, send.to_vec()),
        (&docker, vec!["status", ID]),
        (&docker, vec!["cancel", ID]),
        (&docker, vec!["health"]),
        (&docker, vec!["events"]),
    ];
    for (socket, args) in cases {
        let o = waq_on(socket, &args);
        assert_eq!(code(&o), 3, "{args:?}: {}{}", stdout(&o), stderr(&o));
        assert_eq!(stdout(&o), "", "{args:?}: nothing is the daemon's answer");
        let says = format!("what answered on {} is not a waq daemon", socket.display());
        assert!(stderr(&o).contains(&says), "{args:?}: {}", stderr(&o));
    }
    let o = waq_on(&foo, &send);
    assert!(
        stderr(&o).contains("its answer (200) has no `id`"),
        "{}",
        stderr(&o)
    );
    let o = waq_on(&docker, &["ls"]);
    assert!(
        stderr(&o).contains("its error answer (404) has no `error` object")
            && stderr(&o).contains("page not found"),
        "{}",
        stderr(&o)
    );

    // A refusal in waq's envelope is still the daemon saying no.
    let refusing_dir = tempfile::tempdir().unwrap();
    let refusing = fake_server(
        refusing_dir.path(),
        answering(
            "409 Conflict",
            r#"{"error":{"code":"not_cancellable","message":"it is sent"}}"#,
        ),
    );
    let o = waq_on(&refusing, &["cancel", ID]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("not_cancellable"), "{}", stderr(&o));
}

/// An event stream of `lines`, one chunk each, that then ends.
fn streaming(lines: &[&str]) -> Vec<u8> {
    let mut out = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n\
                    Transfer-Encoding: chunked\r\n\r\n"
        .to_vec();
    for line in lines {
        out.extend(format!("{:x}\r\n{line}\n\r\n", line.len() + 1).into_bytes());
    }
    out.extend(b"0\r\n\r\n");
    out
}

#[test]
fn events_that_end_without_the_shutdown_line_exit_3() {
    let subscribed = r#"{"event":"subscribed","at":"2026-11-24T20:00:00.000Z"}"#;
    let event = r#"{"event":"message","id":"0000000000000001","state":"queued"}"#;
    let dir = tempfile::tempdir().unwrap();
    let cut = fake_server(dir.path(), streaming(&[subscribed, event]));
    let o = waq_on(&cut, &["events"]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    // What came is printed, as it came.
    assert_eq!(stdout(&o), format!("{subscribed}\n{event}\n"));
    assert!(
        stderr(&o).contains("ended the event stream without saying why"),
        "{}",
        stderr(&o)
    );

    // The daemon's last line when it stops: exit 0.
    let dir = tempfile::tempdir().unwrap();
    let stopped = fake_server(
        dir.path(),
        streaming(&[subscribed, event, r#"{"event":"shutdown"}"#]),
    );
    let o = waq_on(&stopped, &["events"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o).lines().count(), 3, "{}", stdout(&o));
}

/// Spawns `waq events` on the daemon and returns it once its first line (`subscribed`) is in.
fn following(
    d: &Daemon,
) -> (
    std::process::Child,
    std::io::BufReader<std::process::ChildStdout>,
) {
    use std::io::BufRead;
    let mut child = Command::new(bin())
        .arg("events")
        .env("WAQ_SOCKET", &d.socket)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert!(first.contains(r#""event":"subscribed""#), "{first}");
    (child, out)
}

#[test]
fn events_exit_0_when_the_daemon_stops() {
    use std::io::Read;
    let mut d = Daemon::start();
    let (child, mut out) = following(&d);
    assert!(d.sigterm().success());
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        rest.lines().last(),
        Some(r#"{"event":"shutdown"}"#),
        "{rest}"
    );
}

#[test]
fn events_cut_off_by_a_reload_that_refuses_the_user_exit_1_with_the_reason() {
    let (own, other) = common::own_and_other_uid();
    let d = Daemon::allowing_uids(&[own, other]);
    let (child, _out) = following(&d);
    // Nothing listens at the API: its retries keep events coming after the reload.
    assert_eq!(
        d.post("/v1/messages", &common::template_request("+14155551234"))
            .status,
        202
    );
    d.reload_allowed_uids(&[own, other], &[other]);
    let o = child.wait_with_output().unwrap();
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("closed the event stream") && stderr(&o).contains("peer_not_allowed"),
        "{}",
        stderr(&o)
    );
}

/// A sparse filter's first page can be empty with a cursor (the daemon looks at 50,000 records a
/// page): `waq ls` follows the cursor to the first messages rather than show an empty table.
#[test]
fn ls_shows_the_first_page_with_messages_of_a_sparse_filter_also_as_json() {
    let d = Daemon::start();
    let parked = common::parked(common::template_request("+14155550300"));
    for _ in 0..5 {
        let batch = Value::Array(vec![parked.clone(); 10_000]);
        let r = d.post("/v1/messages/batch", &batch);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let last = d.enqueue(&parked);
    let o = d.waq(&["cancel", &last]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));

    let page = d.get("/v1/messages?state=cancelled&limit=1").json();
    assert_eq!(
        page["messages"],
        serde_json::json!([]),
        "the daemon's page is empty"
    );
    assert!(page["next_cursor"].is_string(), "{page}");
    let o = d.waq(&["ls", "--state", "cancelled", "--limit", "1"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains(&last), "{out}");
    assert!(out.starts_with("ID "), "one header: {out}");
    // So does a script's.
    let o = d.waq(&["ls", "--state", "cancelled", "--limit", "1", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        json(&o)["messages"][0]["id"],
        last.as_str(),
        "{}",
        stdout(&o)
    );
}
