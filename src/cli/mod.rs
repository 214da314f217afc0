//! The command line: `waq serve` runs the daemon; every other command is a client of the
//! socket API. Human output by default, `--json` prints the daemon's answer as is.
//!
//! Exit codes: 0 success, 1 the daemon said no (its reason printed), 2 usage error,
//! 3 daemon unreachable (or what answered is not one, see `shape`).

/// `println!` for client commands: a closed stdout ends the command quietly (see `out`).
macro_rules! outln {
    () => {
        $crate::cli::out::line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::cli::out::line(format_args!($($arg)*))
    };
}

pub(crate) mod client;
mod generate;
pub(crate) mod out;
pub use out::err_line;
mod events;
mod send;
mod shape;
mod show;
mod watch;

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use hyper::Method;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::config::{ConfigError, DEFAULT_SOCKET_PATH, MAX_SOCKET_PATH};

use client::{Client, Unreachable};
pub use generate::{completions, man};
pub use send::SendArgs;
use shape::{Answer, Shape};

pub const EXIT_OK: i32 = 0;
pub const EXIT_REFUSED: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_UNREACHABLE: i32 = 3;
/// `waq health`: the daemon serves, but something is degraded. The contract's codes are 0–3,
/// and a degraded daemon says no to "healthy?", with its reasons printed.
pub const EXIT_DEGRADED: i32 = EXIT_REFUSED;

/// The daemon and its client commands (the binary adds its own beside these).
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground (what systemd starts).
    Serve {
        /// The configuration file.
        #[arg(long, value_name = "PATH")]
        config: PathBuf,
        /// Log one JSON object per line, whatever log.format says.
        #[arg(long)]
        log_json: bool,
    },
    /// Enqueue a message.
    Send(Box<SendArgs>),
    /// Show one message: state, attempts, last error, history.
    Status {
        /// The message id (16 hex digits).
        #[arg(value_parser = message_id)]
        id: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// List messages, oldest first.
    Ls(LsArgs),
    /// Cancel a message not yet handed to Meta, or every such message of a recipient or a sender.
    // A group, so that a bare `waq cancel` names the bulk forms too, not only <ID>.
    #[command(group = clap::ArgGroup::new("which").required(true).multiple(true).args(["id", "to", "sender"]))]
    Cancel {
        /// The message id (16 hex digits).
        #[arg(value_parser = message_id, conflicts_with_all = ["to", "sender"])]
        id: Option<String>,
        /// Cancel every queued or retrying message to this recipient (of `--sender` only, if
        /// given), e.g. one who opted out.
        #[arg(long, value_name = "NUMBER")]
        to: Option<String>,
        /// Cancel every queued or retrying message of this sender (to `--to` only, if given).
        #[arg(long, value_name = "NAME")]
        sender: Option<String>,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Put a failed or expired message back in the queue, or every one with a last error's code,
    /// of a recipient or of a sender.
    #[command(group = clap::ArgGroup::new("which").required(true).multiple(true).args(["id", "code", "to", "sender"]))]
    Retry {
        /// The message id (16 hex digits).
        #[arg(value_parser = message_id, conflicts_with_all = ["code", "to", "sender"])]
        id: Option<String>,
        /// Put back every failed or expired message whose `last_error.code` is this (e.g.
        /// meta_132001 once the template is approved); with --to or --sender, of those only.
        #[arg(long)]
        code: Option<String>,
        /// Put back every failed or expired message to this recipient.
        #[arg(long, value_name = "NUMBER")]
        to: Option<String>,
        /// Put back every failed or expired message of this sender.
        #[arg(long, value_name = "NAME")]
        sender: Option<String>,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Counts by state, per-sender rates, in-flight requests, counters.
    Stats {
        /// Refresh until Ctrl-C: a live view on a terminal, repeated blocks otherwise
        /// (one JSON line per refresh with --json).
        #[arg(long)]
        watch: bool,
        /// How often --watch refreshes, e.g. 500ms or 2s.
        #[arg(long, value_name = "DURATION", default_value = "1s", allow_negative_numbers = true,
              value_parser = parse_interval, requires = "watch")]
        interval: std::time::Duration,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Whether the daemon is serving, and which senders are paused and why.
    Health {
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Manage senders.
    Sender {
        #[command(subcommand)]
        action: SenderAction,
    },
    /// Record that a customer wrote to a sender (opens the 24-hour window).
    Inbound {
        /// The customer's phone number.
        #[arg(long, value_name = "NUMBER")]
        from: String,
        /// The sender written to (optional with a single sender).
        #[arg(long)]
        sender: Option<String>,
        /// When the message was received: RFC 3339 with its UTC offset; default now.
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Show whether a customer's 24-hour window with a sender is open (free-form messages
    /// allowed) and until when.
    Window {
        /// The customer's phone number.
        #[arg(value_name = "NUMBER", value_parser = recipient_number)]
        number: String,
        /// The sender (optional with a single sender).
        #[arg(long)]
        sender: Option<String>,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Follow the daemon's events (state changes, inbound messages) as JSON lines.
    // Events are JSON either way; --json still decides how a refusal is printed.
    #[command(mut_arg("json", |a| a.help(
        "Print a refusal as the daemon's JSON answer (events are JSON lines either way)"
    )))]
    Events {
        /// Ask for a heartbeat after this many quiet seconds (not printed), so that a reader
        /// that went away (`| head -1`) is noticed while no event comes.
        #[arg(long, value_name = "SECONDS", allow_negative_numbers = true,
              value_parser = clap::value_parser!(u32).range(1..=crate::api::MAX_HEARTBEAT_S as i64))]
        heartbeat: Option<u32>,
        #[command(flatten)]
        client: ClientOpts,
    },
}

#[derive(Debug, Subcommand)]
pub enum SenderAction {
    /// Resume a sender its circuit breaker paused.
    Resume {
        /// The sender's name, as in the configuration.
        name: String,
        #[command(flatten)]
        client: ClientOpts,
    },
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only these states (comma-separated), e.g. failed,expired.
    #[arg(long)]
    state: Option<String>,
    /// Only messages to this number.
    #[arg(long, value_name = "NUMBER")]
    to: Option<String>,
    /// Only messages of this sender.
    #[arg(long)]
    sender: Option<String>,
    /// The message Meta knows by this wamid (any of its accepted attempts').
    #[arg(long)]
    wamid: Option<String>,
    /// The message enqueued with this idempotency key (`--key`, as on `send`).
    #[arg(long, value_name = "KEY", visible_alias = "key")]
    idempotency_key: Option<String>,
    /// Messages per page (1–1000).
    #[arg(long, allow_negative_numbers = true, value_parser = clap::value_parser!(u16).range(1..=1000))]
    limit: Option<u16>,
    /// Continue after this cursor (the `next_cursor` of the previous page).
    #[arg(long)]
    cursor: Option<String>,
    /// Follow the cursors to the end.
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    client: ClientOpts,
}

/// How every client command finds the daemon and prints its answers.
#[derive(Debug, Args)]
pub struct ClientOpts {
    /// The daemon's socket; by default $WAQ_SOCKET, else /run/waq/waq.sock.
    // $WAQ_SOCKET is read as the default rather than with clap's `env`: clap lists an argument
    // taken from the environment in the usage line of every error, as if it were required.
    #[arg(long, value_name = "PATH", default_value_os_t = default_socket(), hide_default_value = true)]
    pub socket: PathBuf,
    /// Print the daemon's JSON answer instead of a summary.
    #[arg(long)]
    pub json: bool,
}

impl Command {
    /// The client options of a client command (`None` for `serve`).
    fn client_opts(&self) -> Option<&ClientOpts> {
        match self {
            Command::Serve { .. } => None,
            Command::Send(args) => Some(&args.client),
            Command::Ls(args) => Some(&args.client),
            Command::Sender {
                action: SenderAction::Resume { client, .. },
            } => Some(client),
            Command::Status { client, .. }
            | Command::Cancel { client, .. }
            | Command::Retry { client, .. }
            | Command::Stats { client, .. }
            | Command::Health { client }
            | Command::Inbound { client, .. }
            | Command::Window { client, .. }
            | Command::Events { client, .. } => Some(client),
        }
    }
}

/// A socket path that cannot be dialled whatever runs: a usage error rather than exit 3.
fn check_socket(socket: &Path) -> Result<(), String> {
    let len = socket.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(format!(
            "the socket path {} is {len} bytes long; a Unix socket's path can be at most \
             {MAX_SOCKET_PATH} bytes: give a shorter --socket or $WAQ_SOCKET",
            socket.display()
        ));
    }
    Ok(())
}

/// `ID` of status, cancel and retry, checked as the daemon checks it, so that a mistyped id
/// is a usage error without a round trip.
fn message_id(s: &str) -> Result<String, String> {
    const LOOKS: &str =
        "a message id is 16 hex digits, as `waq send` prints it, e.g. 0000000000000007";
    match crate::model::parse_id(s) {
        Some(id) => Ok(crate::model::format_id(id)),
        None if s.is_empty() => Err(format!("the id is empty; {LOOKS}")),
        None => Err(LOOKS.to_string()),
    }
}

/// `NUMBER` of window: an empty one would name no recipient but another route. The daemon
/// checks the rest, as it does for every number.
fn recipient_number(s: &str) -> Result<String, String> {
    match s.trim().is_empty() {
        true => {
            Err("the number is empty; give the customer's phone number, e.g. +14155551234".into())
        }
        false => Ok(s.to_string()),
    }
}

/// `$WAQ_SOCKET` when set and not empty, else the default path.
fn default_socket() -> PathBuf {
    std::env::var_os("WAQ_SOCKET")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET_PATH))
}

/// Runs one command; returns the process exit code.
pub fn run(command: Command) -> i32 {
    if let Command::Serve { config, log_json } = &command {
        return serve(config, *log_json);
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            crate::stderr_line!("waq: cannot start: {e}");
            return EXIT_UNREACHABLE;
        }
    };
    match rt.block_on(client_command(command)) {
        Ok(code) => code,
        Err(Failure::Usage(msg)) => {
            crate::stderr_line!("waq: {msg}");
            EXIT_USAGE
        }
        Err(Failure::Unreachable(e)) => {
            crate::stderr_line!("waq: {e}");
            EXIT_UNREACHABLE
        }
    }
}

fn serve(config: &Path, log_json: bool) -> i32 {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            crate::stderr_line!("waq: cannot start the runtime: {e}");
            return 1;
        }
    };
    match rt.block_on(crate::daemon::serve(config, log_json.then_some(true))) {
        Ok(()) => EXIT_OK,
        Err(e) if e.downcast_ref::<ConfigError>().is_some() => {
            crate::stderr_line!("waq: {e}");
            EXIT_USAGE
        }
        Err(e) => {
            crate::stderr_line!("waq: {e:#}");
            1
        }
    }
}

/// Why a client command could not get an answer.
enum Failure {
    Usage(String),
    Unreachable(Unreachable),
}

impl From<Unreachable> for Failure {
    fn from(e: Unreachable) -> Self {
        Failure::Unreachable(e)
    }
}

async fn client_command(command: Command) -> Result<i32, Failure> {
    if let Some(c) = command.client_opts() {
        check_socket(&c.socket).map_err(Failure::Usage)?;
    }
    match command {
        Command::Serve { .. } => Ok(EXIT_USAGE),
        Command::Send(args) => {
            let body = args.request().map_err(Failure::Usage)?;
            let c = &args.client;
            let reply = call(
                c,
                Method::POST,
                "/v1/messages",
                Some(body.into_bytes()),
                &shape::ACCEPTED,
            )
            .await?;
            Ok(answer_explained(c, &reply, show::enqueued, |e| {
                args.explain(e)
            }))
        }
        Command::Status { id, client: c } => {
            let reply = call(
                &c,
                Method::GET,
                &format!("/v1/messages/{}", encode(&id)),
                None,
                &shape::MESSAGE,
            )
            .await?;
            Ok(answer(&c, &reply, |v| show::message(v, &reply.body)))
        }
        Command::Ls(args) => ls(args).await,
        Command::Cancel {
            id: None,
            to,
            sender,
            client: c,
        } => {
            let path = format!("/v1/messages?{}", query(&[("to", to), ("sender", sender)]));
            let reply = call(&c, Method::DELETE, &path, None, &shape::CANCELLED).await?;
            Ok(answer_naming(
                &c,
                &reply,
                show::cancelled,
                &["to", "sender"],
            ))
        }
        Command::Cancel {
            id: Some(id),
            client: c,
            ..
        } => {
            let reply = call(
                &c,
                Method::DELETE,
                &format!("/v1/messages/{}", encode(&id)),
                None,
                &shape::MESSAGE,
            )
            .await?;
            Ok(answer(&c, &reply, |v| {
                outln!("cancelled {}", text(v, "id"))
            }))
        }
        Command::Retry {
            id: None,
            code,
            to,
            sender,
            client: c,
        } => {
            let path = format!(
                "/v1/messages/retry?{}",
                query(&[("code", code), ("to", to), ("sender", sender)])
            );
            let reply = call(&c, Method::POST, &path, None, &shape::RETRIED).await?;
            let human = |v: &Value| {
                let n = v.get("retried").and_then(Value::as_u64).unwrap_or(0);
                let plural = |n: u64| if n == 1 { "message" } else { "messages" };
                let mut line = format!("queued {n} {} again", plural(n));
                let closed = v.get("window_closed").and_then(Value::as_u64).unwrap_or(0);
                if closed > 0 {
                    line.push_str(&format!(
                        "; left out {closed} free-form {} whose window is still closed \
                         (record the customer's message with `waq inbound`, then retry)",
                        plural(closed)
                    ));
                }
                outln!("{line}")
            };
            Ok(answer_naming(&c, &reply, human, &["code", "to", "sender"]))
        }
        Command::Retry {
            id: Some(id),
            client: c,
            ..
        } => {
            let path = format!("/v1/messages/{}/retry", encode(&id));
            let reply = call(&c, Method::POST, &path, None, &shape::ACCEPTED).await?;
            let human = |v: &Value| outln!("queued {} again", text(v, "id"));
            // The next step for a closed window, as `send` gives it, in terms of the CLI.
            let explain = |e: &Value| Explained {
                option: None,
                hint: (e.get("code").and_then(Value::as_str) == Some("window_closed")).then(|| {
                    format!(
                        "once the customer writes, record it with `waq inbound --from NUMBER` \
                         (their number: `waq status {id}`), then retry"
                    )
                }),
            };
            Ok(answer_explained(&c, &reply, human, explain))
        }
        Command::Stats {
            watch: true,
            interval,
            client: c,
        } => Ok(watch::watch(&c, interval).await?),
        Command::Stats { client: c, .. } => {
            let reply = call(&c, Method::GET, "/v1/stats", None, &shape::STATS).await?;
            Ok(answer(&c, &reply, show::stats))
        }
        Command::Health { client: c } => {
            let reply = call(&c, Method::GET, "/v1/health", None, &shape::HEALTH).await?;
            // 503 (the store cannot take writes) carries the same report as a 200, to be
            // read as one: printed the same way, and degraded.
            if reply.is_report() {
                match c.json {
                    true => outln!("{}", String::from_utf8_lossy(&reply.body).trim_end()),
                    false => show::health(&reply.value),
                }
                return Ok(EXIT_DEGRADED);
            }
            // Degraded is served (200) but not healthy: checks see it in the exit code, apart
            // from the daemon's absence (3).
            Ok(match answer(&c, &reply, show::health) {
                EXIT_OK if reply.value.get("status").and_then(Value::as_str) != Some("ok") => {
                    EXIT_DEGRADED
                }
                code => code,
            })
        }
        Command::Sender {
            action: SenderAction::Resume { name, client: c },
        } => {
            let path = format!("/v1/senders/{}/resume", encode(&name));
            let reply = call(&c, Method::POST, &path, None, &shape::RESUMED).await?;
            Ok(answer(&c, &reply, |_| outln!("resumed {name}")))
        }
        Command::Inbound {
            from,
            sender,
            at,
            client: c,
        } => {
            let body = json!({ "from": from, "sender": sender, "at": at });
            let reply = post(&c, "/v1/inbound", &body, &shape::RECIPIENT).await?;
            Ok(answer_naming(
                &c,
                &reply,
                show::recipient,
                &["from", "sender", "at"],
            ))
        }
        Command::Window {
            number,
            sender,
            client: c,
        } => {
            let mut path = format!("/v1/recipients/{}", encode(&number));
            if let Some(sender) = sender {
                path.push_str(&format!("?sender={}", encode(&sender)));
            }
            let reply = call(&c, Method::GET, &path, None, &shape::RECIPIENT).await?;
            Ok(answer_naming(&c, &reply, show::recipient, &["sender"]))
        }
        Command::Events {
            heartbeat,
            client: c,
        } => Ok(events::follow(&c, heartbeat).await?),
    }
}

/// The messages of a page of `GET /v1/messages`, each as written.
#[derive(serde::Deserialize)]
struct RawPage {
    messages: Vec<Box<RawValue>>,
}

async fn ls(args: LsArgs) -> Result<i32, Failure> {
    let c = &args.client;
    let mut cursor = args.cursor.clone();
    // The messages of every page as the daemon wrote them: read into `Value`s and written
    // again, their metadata's numbers would become doubles.
    let mut all: Vec<Box<RawValue>> = Vec::new();
    let mut first_page = true;
    loop {
        let params = query(&[
            ("state", args.state.clone()),
            ("to", args.to.clone()),
            ("sender", args.sender.clone()),
            ("wamid", args.wamid.clone()),
            ("idempotency_key", args.idempotency_key.clone()),
            ("limit", args.limit.map(|l| l.to_string())),
            ("cursor", cursor.clone()),
        ]);
        let path = if params.is_empty() {
            "/v1/messages".to_string()
        } else {
            format!("/v1/messages?{params}")
        };
        let reply = call(c, Method::GET, &path, None, &shape::PAGE).await?;
        let page = &reply.value;
        let next = page
            .get("next_cursor")
            .and_then(Value::as_str)
            .map(str::to_string);
        // A sparse filter's page may hold nothing but a cursor (the daemon bounds each
        // page's scan): the first page with messages is shown, not an empty one that a script
        // would take for "none".
        let empty = page
            .get("messages")
            .and_then(Value::as_array)
            .is_some_and(Vec::is_empty);
        if reply.ok() && !args.all && empty && next.is_some() {
            cursor = next;
            continue;
        }
        if !reply.ok() || !args.all {
            let human = |v: &Value| show::list(v, true, false);
            let fields = crate::api::LIST_PARAMS;
            return Ok(answer_naming(c, &reply, human, &fields));
        }
        if c.json {
            // `shape::check` found `messages` an array, so this reads.
            if let Ok(items) = serde_json::from_slice::<RawPage>(&reply.body) {
                all.extend(items.messages);
            }
        } else {
            show::list(page, first_page, true);
        }
        first_page = false;
        match next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    if c.json {
        let all: Vec<&str> = all.iter().map(|m| m.get()).collect();
        outln!(r#"{{"messages":[{}],"next_cursor":null}}"#, all.join(","));
    }
    Ok(EXIT_OK)
}

/// One request, its answer checked to be a waq daemon's with the fields `shape` names (see
/// `shape`): anything else is exit 3, as no daemon is.
async fn call(
    c: &ClientOpts,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
    shape: &Shape,
) -> Result<Answer, Unreachable> {
    let reply = Client::new(&c.socket).call(method, path, body).await?;
    shape::check(reply, shape, &c.socket)
}

async fn post(
    c: &ClientOpts,
    path: &str,
    body: &Value,
    shape: &Shape,
) -> Result<Answer, Unreachable> {
    call(
        c,
        Method::POST,
        path,
        Some(body.to_string().into_bytes()),
        shape,
    )
    .await
}

/// Prints the answer (`--json`: as is; else `human` for success, the reason for an error)
/// and returns the exit code.
fn answer(c: &ClientOpts, reply: &Answer, human: impl FnOnce(&Value)) -> i32 {
    answer_explained(c, reply, human, |_| Explained::default())
}

/// [`answer`] for a command whose options set the query parameters or body fields `fields`
/// each of the same name: a refusal names the option as well as the field.
fn answer_naming(
    c: &ClientOpts,
    reply: &Answer,
    human: impl FnOnce(&Value),
    fields: &[&str],
) -> i32 {
    answer_explained(c, reply, human, |e| Explained {
        option: e
            .get("field")
            .and_then(Value::as_str)
            .filter(|f| fields.contains(f))
            .and_then(option_named),
        hint: None,
    })
}

/// The option of the client commands that sets the query parameter or body field `field`.
fn option_named(field: &str) -> Option<&'static str> {
    Some(match field {
        "to" => "--to",
        "sender" => "--sender",
        "state" => "--state",
        "wamid" => "--wamid",
        "idempotency_key" => "--idempotency-key",
        "limit" => "--limit",
        "cursor" => "--cursor",
        "code" => "--code",
        "from" => "--from",
        "at" => "--at",
        _ => return None,
    })
}

/// What a command adds to a refusal it prints for a person (never to `--json` output).
#[derive(Debug, Default)]
struct Explained {
    /// The option the user typed for the refused JSON field.
    option: Option<&'static str>,
    /// A next step in terms of the command line, printed on a line of its own.
    hint: Option<String>,
}

/// [`answer`], with `explain` adding to a refusal (it gets the answer's `error` object).
fn answer_explained(
    c: &ClientOpts,
    reply: &Answer,
    human: impl FnOnce(&Value),
    explain: impl FnOnce(&Value) -> Explained,
) -> i32 {
    let ok = reply.ok();
    if c.json {
        outln!("{}", String::from_utf8_lossy(&reply.body).trim_end());
    } else if ok {
        human(&reply.value);
    } else {
        // `shape::check` let through only refusals with waq's error object.
        let e = &reply.value["error"];
        let explained = explain(e);
        let mut line = format!("waq: {} [{}", text(e, "message"), text(e, "code"));
        if let Some(f) = e.get("field").and_then(Value::as_str) {
            line.push_str(&format!(", field {f}"));
        }
        if let Some(option) = explained.option {
            line.push_str(&format!(", option {option}"));
        }
        line.push(']');
        crate::stderr_line!("{line}");
        if let Some(hint) = explained.hint {
            crate::stderr_line!("waq: {hint}");
        }
    }
    if ok {
        EXIT_OK
    } else {
        EXIT_REFUSED
    }
}

/// `--interval`: a duration such as `1s` or `500ms`, at least `watch::MIN_INTERVAL`.
fn parse_interval(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (e.g. 1s, 500ms)"))?;
    if d < watch::MIN_INTERVAL {
        return Err(format!(
            "at least {} (rates are per second)",
            humantime::format_duration(watch::MIN_INTERVAL)
        ));
    }
    Ok(d)
}

/// A string field of an answer, or `-`.
fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("-")
}

/// Percent-encodes everything but unreserved characters (for path segments and query values:
/// ids and names are plain, but a typo should still reach the daemon intact and be answered).
/// The given parameters as a query string (`key=value&…`), each value encoded.
fn query(params: &[(&str, Option<String>)]) -> String {
    params
        .iter()
        .filter_map(|(key, v)| Some(format!("{key}={}", encode(v.as_ref()?))))
        .collect::<Vec<_>>()
        .join("&")
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_query_values() {
        assert_eq!(encode("+1 415"), "%2B1%20415");
        assert_eq!(encode("failed,expired"), "failed%2Cexpired");
        assert_eq!(encode("abc-_.~"), "abc-_.~");
    }
}
