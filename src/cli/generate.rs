//! `waq completions SHELL` (clap_complete) and `waq man [COMMAND]` (clap_mangen): generated
//! from the same definitions that parse the command line, so they never drift from it. The man
//! pages add what clap does not know: EXIT STATUS and ENVIRONMENT.

use std::io::Write;

use clap_complete::Shell;
use roff::{bold, roman, Roff};

/// Prints the completion script for `shell` to stdout.
pub fn completions(shell: Shell, mut cmd: clap::Command) -> i32 {
    let name = cmd.get_name().to_string();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut script);
    emit(&script, "the completion script")
}

/// Prints the man page (roff) of `waq`, or of one subcommand as `waq-COMMAND(1)`, to stdout.
pub fn man(cmd: clap::Command, command: Option<&str>) -> i32 {
    let kind = match command {
        None => Page::Top,
        Some(path) => {
            let top = path.split_whitespace().next().unwrap_or_default();
            match cmd.find_subcommand(top) {
                Some(_) if top == "health" => Page::Health,
                Some(sub) if is_client(sub) => Page::Client,
                _ => Page::Other(top.to_string()),
            }
        }
    };
    let page = match command {
        None => cmd,
        Some(path) => {
            let mut current = cmd;
            let mut name = current.get_name().to_string();
            let mut invocation = name.clone();
            for part in path.split_whitespace() {
                let Some(sub) = current.find_subcommand(part).cloned() else {
                    let known: Vec<&str> =
                        current.get_subcommands().map(|s| s.get_name()).collect();
                    crate::stderr_line!(
                        "waq: no command `{part}` in `{invocation}`; commands: {}",
                        known.join(", ")
                    );
                    return super::EXIT_USAGE;
                };
                name = format!("{name}-{}", sub.get_name());
                invocation = format!("{invocation} {}", sub.get_name());
                current = sub;
            }
            // Page `waq-send(1)`, synopsis `waq send [OPTIONS] ...`.
            current.display_name(name).bin_name(invocation)
        }
    };
    let mut roff = Vec::new();
    let rendered = clap_mangen::Man::new(page)
        .source(format!("waq {}", env!("CARGO_PKG_VERSION")))
        .render(&mut roff);
    if let Err(e) = rendered {
        crate::stderr_line!("waq: cannot render the man page: {e}");
        return 1;
    }
    // Where man pages have them: after the options and commands, before VERSION.
    let at = roff
        .windows(VERSION_HEADING.len())
        .position(|w| w == VERSION_HEADING)
        .map_or(roff.len(), |i| i + 1);
    roff.splice(at..at, sections(&kind).into_bytes());
    emit(&roff, "the man page")
}

/// The last section clap_mangen writes, when the command has a version (`waq` itself).
const VERSION_HEADING: &[u8] = b"\n.SH VERSION\n";

/// Writes `bytes` to stdout. A reader that stops early (`| head`) is not an error.
fn emit(bytes: &[u8], what: &str) -> i32 {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => super::EXIT_OK,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => super::EXIT_OK,
        Err(e) => {
            crate::stderr_line!("waq: cannot write {what}: {e}");
            1
        }
    }
}

/// Which man page: `waq` itself, a client of the socket, or another command (by name).
enum Page {
    Top,
    Client,
    /// `waq health`: a client command with an exit code of its own.
    Health,
    Other(String),
}

/// A client command (or a group of them, like `sender`) takes `--socket`.
fn is_client(cmd: &clap::Command) -> bool {
    cmd.get_arguments().any(|a| a.get_id() == "socket") || cmd.get_subcommands().any(is_client)
}

/// The EXIT STATUS and ENVIRONMENT sections of `page`, in roff.
fn sections(page: &Page) -> String {
    let mut roff = Roff::new();
    roff.control("SH", ["EXIT STATUS"]);
    for (code, meaning) in exit_codes(page) {
        roff.control("TP", [])
            .text([bold(code)])
            .text([roman(meaning)]);
    }
    let variables = environment(page);
    if !variables.is_empty() {
        roff.control("SH", ["ENVIRONMENT"]);
        for (name, meaning) in variables {
            roff.control("TP", [])
                .text([bold(name)])
                .text([roman(meaning)]);
        }
    }
    // The page's preamble defines what apostrophes render as; this part is spliced into it.
    let text = roff.render();
    let preamble = Roff::new().render();
    text.strip_prefix(&preamble).unwrap_or(&text).to_string()
}

/// The exit codes of `page` and what each means (docs/cli.md says the same).
fn exit_codes(page: &Page) -> Vec<(&'static str, &'static str)> {
    const USAGE: &str = "Usage error: an unknown option or a bad value.";
    const CLIENT_USAGE: &str = "Usage error, found before the daemon is asked: an unknown option \
        or a bad value, an option without the one it belongs to (such as --lang without \
        --template), a message id that is not 16 hex digits, a socket path longer than 107 bytes.";
    const REFUSED: &str = "The daemon said no: its message, code and field are printed (with \
        --json, its JSON answer); for waq events, the daemon closed the stream (a reload no \
        longer allows this user).";
    const UNREACHABLE: &str = "The daemon could not be reached: no socket, nothing listening, \
        permission denied, or no answer within 60 s; or what answered on the socket is not a \
        waq daemon; or, for waq events, the daemon ended the stream without its shutdown or \
        closed line.";
    match page {
        Page::Top => vec![
            ("0", "Success."),
            (
                "1",
                "For a client command, the daemon said no: its message, code and field are \
                 printed; for waq health, the daemon is degraded (what and why is printed). For \
                 another command, it failed, and the reason is printed.",
            ),
            (
                "2",
                "Usage error, found before the daemon is asked: an unknown option or a bad \
                 value, an option without the one it belongs to, a malformed message id, a \
                 socket path longer than 107 bytes. For waq serve, an invalid configuration \
                 (the key is named).",
            ),
            (
                "3",
                "A client command could not reach the daemon: no socket, nothing listening, \
                 permission denied, or no answer within 60 s; or what answered on the socket \
                 is not a waq daemon; or waq events saw the daemon end the stream without its \
                 shutdown or closed line.",
            ),
            (
                "130",
                "waq demo was interrupted (Ctrl-C or SIGTERM); what it started is stopped and \
                 removed.",
            ),
        ],
        Page::Client => vec![
            ("0", "Success."),
            ("1", REFUSED),
            ("2", CLIENT_USAGE),
            ("3", UNREACHABLE),
        ],
        Page::Health => vec![
            ("0", "The daemon serves, and nothing is degraded (\"ok\")."),
            (
                "1",
                "The daemon serves but is degraded: a sender paused, a sender whose requests \
                 get no answer from the Graph API, a sender no longer configured that holds \
                 messages, or a store that refuses writes. What and why is printed. Or the \
                 daemon said no, as for any client command.",
            ),
            ("2", CLIENT_USAGE),
            ("3", UNREACHABLE),
        ],
        Page::Other(name) => match name.as_str() {
            "serve" => vec![
                ("0", "Stopped cleanly by SIGTERM or SIGINT."),
                (
                    "1",
                    "Start-up failed (the socket is taken, the store cannot be opened); the \
                     reason is printed.",
                ),
                (
                    "2",
                    "Usage error, or an invalid configuration: the key is named.",
                ),
            ],
            "sim" => vec![
                ("0", "Stopped by SIGINT or SIGTERM."),
                (
                    "1",
                    "Could not start (a bad configuration, the address taken); the reason is \
                     printed.",
                ),
                ("2", USAGE),
            ],
            "demo" => vec![
                ("0", "Done, and every claim of its summary held."),
                ("1", "It failed; the reason is printed."),
                ("2", USAGE),
                (
                    "130",
                    "Interrupted by Ctrl-C or SIGTERM. Either way, what it started is stopped \
                     and removed.",
                ),
            ],
            "bench" => vec![
                (
                    "0",
                    "Done, even when a figure misses its target: it measures.",
                ),
                ("1", "It failed; the reason is printed."),
                ("2", USAGE),
            ],
            _ => vec![
                ("0", "Success."),
                ("1", "The output could not be written."),
                ("2", USAGE),
            ],
        },
    }
}

/// The environment variables `page`'s command reads, and what each does.
fn environment(page: &Page) -> Vec<(&'static str, String)> {
    // (the command that reads it, "client" for every client command; name; meaning)
    const VARIABLES: [(&str, &str, &str); 8] = [
        (
            "client",
            "WAQ_SOCKET",
            "The daemon's socket for the client commands, when --socket is not given; else \
             /run/waq/waq.sock.",
        ),
        (
            "serve",
            "WAQ__SECTION__KEY",
            "Overrides a key of the configuration file outside [[senders]], with double \
             underscores between the parts: WAQ__STATE_DIR sets state_dir, \
             WAQ__DISPATCH__MAX_IN_FLIGHT=256 sets dispatch.max_in_flight. A WAQ_ variable \
             with one underscore after WAQ (WAQ_DISPATCH_MAX_IN_FLIGHT) is no override: serve \
             warns of it at start, unless it is one of waq's own, such as WAQ_SOCKET.",
        ),
        (
            "serve",
            "WA_ACCESS_TOKEN",
            "A sender's access token, under the name its token_env key gives \
             (token_env = \"WA_ACCESS_TOKEN\"). The webhook's secrets are read the same way, \
             from the variables app_secret_env and verify_token_env name; *_file keys read a \
             file instead, such as a systemd credential.",
        ),
        (
            "serve",
            "CREDENTIALS_DIRECTORY",
            "Set by systemd for a unit with LoadCredential=: a *_file path that starts with \
             ${CREDENTIALS_DIRECTORY} (or $CREDENTIALS_DIRECTORY) reads the credential there.",
        ),
        (
            "serve",
            "NOTIFY_SOCKET, WATCHDOG_USEC, LISTEN_FDS",
            "Set by systemd: readiness and watchdog notifications (Type=notify), and socket \
             activation.",
        ),
        (
            "sim",
            "WAQ_SIM__KEY",
            "Overrides a key of the simulator's configuration, e.g. WAQ_SIM__TOKEN.",
        ),
        (
            "sim",
            "RUST_LOG",
            "The simulator's log filter; info by default.",
        ),
        ("demo", "NO_COLOR", "Draws the progress without colours."),
    ];
    VARIABLES
        .iter()
        .filter_map(|&(command, name, meaning)| match page {
            Page::Top if command == "client" => Some((name, meaning.to_string())),
            // On the page of every command, each says whose it is.
            Page::Top => Some((name, format!("Read by waq {command}. {meaning}"))),
            Page::Client | Page::Health => {
                (command == "client").then(|| (name, meaning.to_string()))
            }
            Page::Other(n) => (command == n).then(|| (name, meaning.to_string())),
        })
        .collect()
}
