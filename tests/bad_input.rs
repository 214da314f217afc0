//! Hostile input: `WAQ_BAD_INPUT_COUNT` (10,000 by default) malformed, oversized, truncated,
//! wrongly typed and unicode-heavy requests at the socket and at the webhook listener, then
//! slow (slowloris) and idle connections up to the connection cap.
//!
//! Every request is answered with a 4xx (a JSON error on the socket; the webhook answers
//! plain text, as Meta expects nothing else), or the connection is closed cleanly; nothing is
//! answered 5xx; the daemon never panics, keeps serving, and its memory stays bounded (the
//! resident set before and after is printed with `--nocapture`).

mod common;
mod rel;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{parked, template_request, Daemon};
use rel::{env_num, parse_response, vm_rss_kib};
use serde_json::json;

const SECRET: &str = "bad-input-app-secret";
const MAX_CONNECTIONS: usize = 32;

/// One hostile request: its bytes, whether to half-close after writing, and whether a 2xx is
/// acceptable (a mutation may happen to be valid).
struct Case {
    bytes: Vec<u8>,
    half_close: bool,
    may_succeed: bool,
}

fn http(method: &str, path: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "{method} {path} HTTP/1.1\r\nHost: waq\r\n{headers}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

fn case(bytes: Vec<u8>) -> Case {
    Case {
        bytes,
        half_close: false,
        may_succeed: false,
    }
}

fn random_bytes(n: usize) -> Vec<u8> {
    (0..n).map(|_| fastrand::u8(..)).collect()
}

fn unicode_soup(n: usize) -> String {
    const BITS: [&str; 10] = [
        "é",
        "😀",
        "\u{202e}",
        "\u{200b}",
        "Z\u{0351}\u{0364}",
        "中",
        "\u{feff}",
        "👨‍👩‍👧",
        "ß",
        "\u{10ffff}",
    ];
    (0..n)
        .map(|_| BITS[fastrand::usize(..BITS.len())])
        .collect()
}

/// A hostile request for the socket API, of kind `k`.
fn socket_case(k: usize) -> Case {
    let valid = parked(template_request("+14155550100")).to_string();
    let json_h = "Content-Type: application/json\r\n";
    match k % 24 {
        0 => case(random_bytes(fastrand::usize(1..400))),
        1 => case(b"GARBAGE\r\n\r\n".to_vec()),
        2 => case(b"GET / HTTP/9.9\r\n\r\n".to_vec()),
        3 => case(b"POST /v1/messages HTTP/1.1\r\nHost waq\r\nContent-Length: 2\r\n\r\n{}".to_vec()),
        4 => case(
            b"POST /v1/messages HTTP/1.1\r\nHost: waq\r\nContent-Length: abc\r\n\r\n{}".to_vec(),
        ),
        5 => case(
            b"POST /v1/messages HTTP/1.1\r\nHost: waq\r\nContent-Length: 99999999999999999999999\r\n\r\n{}"
                .to_vec(),
        ),
        6 => case(
            b"POST /v1/messages HTTP/1.1\r\nHost: waq\r\nContent-Length: 2\r\nContent-Length: 5\r\n\r\n{}"
                .to_vec(),
        ),
        7 => {
            // Body cut mid-way, then the client half-closes.
            let mut b = http("POST", "/v1/messages", json_h, valid.as_bytes());
            let cut = b.len() - fastrand::usize(1..valid.len());
            b.truncate(cut);
            Case {
                bytes: b,
                half_close: true,
                may_succeed: false,
            }
        }
        8 => {
            // Past the 64 KiB head limit (and hyper's ~400 KB read buffer): 431, or closed.
            let big = "x".repeat(fastrand::usize(500_000..1_000_000));
            case(http("GET", "/v1/health", &format!("X-Big: {big}\r\n"), b""))
        }
        9 => {
            let path = format!("/v1/messages/{}", "a".repeat(fastrand::usize(10_000..100_000)));
            case(http("GET", &path, "", b""))
        }
        10 => {
            let mut body = valid.clone().into_bytes();
            body.extend_from_slice(&[0xff, 0xfe, 0xc3, 0x28]);
            body.insert(10, 0xff);
            case(http("POST", "/v1/messages", json_h, &body))
        }
        11 => {
            let depth = fastrand::usize(200..20_000);
            let body = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            case(http("POST", "/v1/messages", json_h, body.as_bytes()))
        }
        12 => {
            let depth = fastrand::usize(200..5_000);
            let mut body = String::from("{\"to\":\"+14155550100\",\"message\":");
            body.push_str(&"{\"a\":".repeat(depth));
            body.push('1');
            body.push_str(&"}".repeat(depth + 1));
            case(http("POST", "/v1/messages", json_h, body.as_bytes()))
        }
        13 => {
            let v = [
                json!(1e300),
                json!(-1),
                json!("600"),
                json!(u64::MAX),
                json!(1.5),
            ][fastrand::usize(..5)]
            .clone();
            let mut r = parked(template_request("+14155550100"));
            r["ttl_s"] = v;
            r["priority"] = [json!("urgent"), json!(5), json!(null)][fastrand::usize(..3)].clone();
            case(http("POST", "/v1/messages", json_h, r.to_string().as_bytes()))
        }
        14 => {
            let body = format!(
                "{{\"to\":\"+14155550100\",\"ttl_s\":1{},\"message\":{{\"type\":\"template\"}}}}",
                "0".repeat(fastrand::usize(20..400))
            );
            case(http("POST", "/v1/messages", json_h, body.as_bytes()))
        }
        15 => {
            let wrong = [
                json!({"to": 14155550100u64, "message": {"type": "text"}}),
                json!({"to": "+14155550100", "message": "hello"}),
                json!({"to": "+14155550100", "message": null}),
                json!({"to": ["+1"], "message": {"type": ["text"]}}),
                json!([]),
                json!("just a string"),
                json!({"to": "+14155550100", "message": {"type": "text", "text": {"body": 5}}}),
                json!({"to": "+14155550100", "send_at": "yesterday", "message": {"type": "template"}}),
                json!({"to": "+14155550100", "metadata": {"x": "y".repeat(5000)},
                       "message": {"type": "template", "template": {"name": "t", "language": {"code": "en"}}}}),
            ];
            let body = wrong[fastrand::usize(..wrong.len())].to_string();
            case(http("POST", "/v1/messages", json_h, body.as_bytes()))
        }
        16 => {
            // Unicode everywhere: recipient, body over the limit, template name.
            let soup = unicode_soup(fastrand::usize(1..5000));
            let r = [
                json!({"to": soup, "message": {"type": "text", "text": {"body": "hi"}}}),
                json!({"to": "+14155550100",
                       "message": {"type": "text", "text": {"body": unicode_soup(4097)}}}),
                json!({"to": "+14155550100", "sender": soup,
                       "message": {"type": "template", "template": {"name": soup, "language": {"code": soup}}}}),
            ][fastrand::usize(..3)]
            .to_string();
            case(http("POST", "/v1/messages", json_h, r.as_bytes()))
        }
        17 => case(http(
            "POST",
            "/v1/messages",
            json_h,
            br#"{"to":"+14155550100","message":{"type":"text","text":{"body":"\ud800"}}}"#,
        )),
        18 => {
            let paths = [
                ("PUT", "/v1/messages"),
                ("GET", "/v1/messages/zzzz"),
                ("DELETE", "/v1/messages/ffffffffffffffff"),
                ("GET", "/../../etc/passwd"),
                ("GET", "/v1/messages?limit=-5&cursor=%00%ff"),
                ("GET", "/v1/messages?state=exploded&limit=99999999999999999999"),
                ("POST", "/v1/senders/%F0%9F%98%80/resume"),
                ("GET", "/v1/recipients/not-a-number?sender=nobody"),
                ("BREW", "/coffee"),
            ];
            let (m, p) = paths[fastrand::usize(..paths.len())];
            let mut c = case(http(m, p, "", b""));
            c.may_succeed = false;
            c
        }
        19 => {
            // A valid request with a few bytes flipped.
            let mut body = valid.clone().into_bytes();
            for _ in 0..fastrand::usize(1..4) {
                let i = fastrand::usize(..body.len());
                body[i] = fastrand::u8(..);
            }
            let mut c = case(http("POST", "/v1/messages", json_h, &body));
            c.may_succeed = true;
            c
        }
        20 => {
            let items: Vec<serde_json::Value> = (0..fastrand::usize(1..50))
                .map(|i| match i % 3 {
                    0 => json!({"to": "nope"}),
                    1 => json!(null),
                    _ => json!({"to": "+14155550100", "message": {"type": "video"}}),
                })
                .collect();
            let mut c = case(http(
                "POST",
                "/v1/messages/batch",
                json_h,
                serde_json::Value::Array(items).to_string().as_bytes(),
            ));
            c.may_succeed = true; // 200 with an error per item
            c
        }
        21 => case(
            b"POST /v1/messages HTTP/1.1\r\nHost: waq\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
                .to_vec(),
        ),
        22 => case(
            b"POST /v1/messages HTTP/1.1\r\nHost: waq\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
                .to_vec(),
        ),
        _ => {
            // Header bytes that are not text.
            let mut b = b"GET /v1/health HTTP/1.1\r\nHost: waq\r\nX-Bin: ".to_vec();
            b.extend_from_slice(&[0x00, 0xff, 0x7f, 0x01]);
            b.extend_from_slice(b"\r\n\r\n");
            case(b)
        }
    }
}

/// A hostile request for the webhook listener, of kind `k`.
fn webhook_case(k: usize) -> Case {
    let sign = |body: &[u8]| waq::webhook::signature::sign(SECRET.as_bytes(), body);
    match k % 10 {
        0 => case(random_bytes(fastrand::usize(1..400))),
        1 => case(http(
            "POST",
            "/webhook",
            "",
            b"{\"object\":\"whatsapp_business_account\"}",
        )),
        2 => case(http(
            "POST",
            "/webhook",
            "X-Hub-Signature-256: sha256=00ff\r\n",
            b"{\"entry\":[]}",
        )),
        3 => case(http(
            "POST",
            "/webhook",
            &format!("X-Hub-Signature-256: {}\r\n", unicode_soup(20)),
            b"{}",
        )),
        4 => case(http(
            "GET",
            &format!(
                "/webhook?hub.mode=subscribe&hub.verify_token={}&hub.challenge=1",
                fastrand::u64(..)
            ),
            "",
            b"",
        )),
        5 => case(http("GET", "/elsewhere/%ff%00", "", b"")),
        6 => {
            let big = "x".repeat(fastrand::usize(70_000..200_000));
            case(http(
                "POST",
                "/webhook",
                &format!("X-Big: {big}\r\n"),
                b"{}",
            ))
        }
        7 => {
            let mut b = http("POST", "/webhook", "", &random_bytes(500));
            b.truncate(b.len() - 200);
            Case {
                bytes: b,
                half_close: true,
                may_succeed: false,
            }
        }
        8 => {
            // Signed, so accepted (200), but nothing in it makes sense.
            let body = random_bytes(fastrand::usize(1..300));
            let mut c = case(http(
                "POST",
                "/webhook",
                &format!("X-Hub-Signature-256: {}\r\n", sign(&body)),
                &body,
            ));
            c.may_succeed = true;
            c
        }
        _ => case(
            b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551616\r\n\r\n"
                .to_vec(),
        ),
    }
}

#[derive(Default)]
struct Tally {
    json_4xx: AtomicU64,
    bare_4xx: AtomicU64,
    closed: AtomicU64,
    ok_2xx: AtomicU64,
}

/// Judges one answer; `Err` says what was wrong.
fn judge(raw: &[u8], c: &Case, want_json: bool, tally: &Tally) -> Result<(), String> {
    if raw.is_empty() {
        tally.closed.fetch_add(1, Ordering::Relaxed);
        return Ok(());
    }
    let (status, body) = parse_response(raw);
    match status {
        200..=299 if c.may_succeed => {
            tally.ok_2xx.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        400..=499 => {
            if body.is_empty() {
                // hyper's own answer to an unparsable head: a bare status, then close.
                tally.bare_4xx.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            if want_json {
                let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| {
                    format!("{status} with a body that is not JSON ({e}): {body:.200}")
                })?;
                if v["error"]["code"].as_str().is_none_or(str::is_empty) {
                    return Err(format!("{status} without error.code: {body:.200}"));
                }
            }
            tally.json_4xx.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        _ => Err(format!(
            "answered {status}: {:.300}",
            String::from_utf8_lossy(raw)
        )),
    }
}

/// Longer than the servers' 30 s head timeout: random bytes can look like the start of a
/// request, which the server rightly waits for before closing the connection.
const PATIENT_READ: Duration = Duration::from_secs(40);

fn unix_exchange(socket: &Path, c: &Case) -> Result<Vec<u8>, String> {
    let s = UnixStream::connect(socket).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(PATIENT_READ)).ok();
    exchange(s, c, |s| {
        let _ = s.shutdown(std::net::Shutdown::Write);
    })
}

fn tcp_exchange(addr: SocketAddr, c: &Case) -> Result<Vec<u8>, String> {
    let s = std::net::TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(PATIENT_READ)).ok();
    exchange(s, c, |s| {
        let _ = s.shutdown(std::net::Shutdown::Write);
    })
}

/// Writes the case and reads one answer (or up to the close).
fn exchange<S: Read + Write>(
    mut s: S,
    c: &Case,
    half_close: impl FnOnce(&S),
) -> Result<Vec<u8>, String> {
    // The server may answer and close before a huge request is written.
    let _ = s.write_all(&c.bytes);
    if c.half_close {
        half_close(&s);
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                // One answer is enough: stop at its end (keep-alive connections stay open).
                if complete(&out) {
                    return Ok(out);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(out),
            Err(e) => {
                return Err(format!(
                    "no answer ({e}) after {:?}",
                    String::from_utf8_lossy(&out)
                ))
            }
        }
    }
}

/// Whether `raw` holds a whole response with a Content-Length body.
fn complete(raw: &[u8]) -> bool {
    let text = String::from_utf8_lossy(raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    body.len() >= len
}

/// Opens a connection that trickles a request one byte per `every`, and returns how long
/// until the server closed it (None: still open at `limit`), and what it answered.
fn slow_client(
    connect: impl FnOnce() -> Option<Box<dyn ReadWrite>>,
    request: Vec<u8>,
    every: Duration,
    limit: Duration,
) -> (Option<Duration>, Vec<u8>) {
    let start = Instant::now();
    let Some(mut s) = connect() else {
        return (Some(Duration::ZERO), Vec::new());
    };
    let mut answer = Vec::new();
    let mut bytes = request.iter().cycle();
    loop {
        if start.elapsed() > limit {
            return (None, answer);
        }
        if let Some(b) = bytes.next() {
            if s.write_all(&[*b]).is_err() {
                let _ = s.read_to_end(&mut answer);
                return (Some(start.elapsed()), answer);
            }
        }
        let mut buf = [0u8; 4096];
        match s.read(&mut buf) {
            Ok(0) => return (Some(start.elapsed()), answer),
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return (Some(start.elapsed()), answer),
        }
        std::thread::sleep(every);
    }
}

trait ReadWrite: Read + Write + Send {}
impl<T: Read + Write + Send> ReadWrite for T {}

#[test]
fn hostile_input_is_refused_and_the_daemon_serves_on() {
    let total = env_num("WAQ_BAD_INPUT_COUNT", 10_000) as usize;
    let d = Daemon::builder()
        .set("socket", &format!("max_connections = {MAX_CONNECTIONS}"))
        .toml(
            "[webhook]\nlisten = \"127.0.0.1:0\"\napp_secret_env = \"WA_APP_SECRET\"\nverify_token_env = \"WA_VERIFY_TOKEN\"",
        )
        .env("WA_APP_SECRET", SECRET)
        .env("WA_VERIFY_TOKEN", "bad-input-verify")
        .start();
    let hook_addr = d.webhook_addr();
    let pid = d.pid();
    let rss_before = vm_rss_kib(pid);

    // The flood: four threads, four socket cases to one webhook case.
    let tally = Arc::new(Tally::default());
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let next = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (tally, failures, next, socket) = (
                tally.clone(),
                failures.clone(),
                next.clone(),
                d.socket.clone(),
            );
            std::thread::spawn(move || loop {
                let k = next.fetch_add(1, Ordering::Relaxed) as usize;
                if k >= total {
                    return;
                }
                let t0 = Instant::now();
                let verdict = if k % 5 == 4 {
                    let c = webhook_case(k / 5);
                    tcp_exchange(hook_addr, &c)
                        .and_then(|raw| judge(&raw, &c, false, &tally))
                        .map_err(|e| format!("webhook case {}: {e}", (k / 5) % 10))
                } else {
                    let c = socket_case(k);
                    unix_exchange(&socket, &c)
                        .and_then(|raw| judge(&raw, &c, true, &tally))
                        .map_err(|e| format!("socket case {}: {e}", k % 24))
                };
                let verdict = verdict.and_then(|()| {
                    // Not a speed assertion: a hostile request must not hang its connection
                    // past the servers' 30 s head timeout (random bytes can look like the
                    // start of a request, which the server rightly waits for until then).
                    if t0.elapsed() > PATIENT_READ {
                        Err(format!(
                            "case {k} took {:?} to be answered or closed",
                            t0.elapsed()
                        ))
                    } else {
                        Ok(())
                    }
                });
                if let Err(e) = verdict {
                    failures.lock().unwrap().push(e);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a flood thread panicked");
    }
    let failures = std::mem::take(&mut *failures.lock().unwrap());
    assert!(
        failures.is_empty(),
        "{} of {total} hostile requests were mishandled, e.g.:\n{}",
        failures.len(),
        failures
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    let rss_flood = vm_rss_kib(pid);

    // Slow and idle connections, as many as the cap. A newcomer is served at once: the idle ones
    // are closed to make room for it. Those trickling a head or a body are in a request, and
    // keep their slots until the head or body timeout ends them.
    let socket = d.socket.clone();
    let unix = move || -> Option<Box<dyn ReadWrite>> {
        let s = UnixStream::connect(&socket).ok()?;
        s.set_read_timeout(Some(Duration::from_millis(1))).ok();
        Some(Box::new(s))
    };
    let tcp = move || -> Option<Box<dyn ReadWrite>> {
        let s = std::net::TcpStream::connect(hook_addr).ok()?;
        s.set_read_timeout(Some(Duration::from_millis(1))).ok();
        Some(Box::new(s))
    };
    let limit = Duration::from_secs(50);
    let slow_head = b"POST /v1/messages HTTP/1.1\r\nHost: waq\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".to_vec();
    let mut slow_body =
        b"POST /v1/messages HTTP/1.1\r\nHost: waq\r\nContent-Length: 1000\r\n\r\n".to_vec();
    slow_body.extend(std::iter::repeat_n(b' ', 1000));
    let mut slow = Vec::new();
    for i in 0..MAX_CONNECTIONS {
        let (unix, head, body) = (unix.clone(), slow_head.clone(), slow_body.clone());
        slow.push(std::thread::spawn(move || match i % 3 {
            0 => (
                "socket idle",
                slow_client(unix, Vec::new(), Duration::from_millis(200), limit),
            ),
            1 => (
                "socket slow head",
                slow_client(unix, head, Duration::from_millis(500), limit),
            ),
            _ => {
                // The head at once, then the body byte by byte.
                let first = body.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 4;
                let connect = move || -> Option<Box<dyn ReadWrite>> {
                    let mut s = unix()?;
                    s.write_all(&body[..first]).ok()?;
                    Some(s)
                };
                (
                    "socket slow body",
                    slow_client(connect, vec![b' '], Duration::from_millis(500), limit),
                )
            }
        }));
    }
    for _ in 0..4 {
        let (tcp, head) = (tcp, slow_head.clone());
        slow.push(std::thread::spawn(move || {
            (
                "webhook slow head",
                slow_client(tcp, head, Duration::from_millis(500), limit),
            )
        }));
    }
    std::thread::sleep(Duration::from_secs(2));
    // Every slot is held: a newcomer gets one by closing an idle connection, well before any
    // of the 30 s timeouts would free one.
    let waiting = {
        let socket = d.socket.clone();
        std::thread::spawn(move || {
            let mut s = UnixStream::connect(&socket).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(15))).ok();
            let body = parked(template_request("+14155550199")).to_string();
            s.write_all(&http(
                "POST",
                "/v1/messages",
                "Content-Type: application/json\r\n",
                body.as_bytes(),
            ))
            .ok()?;
            let mut buf = [0u8; 1];
            let early = s.read(&mut buf).is_ok_and(|n| n > 0);
            s.set_read_timeout(Some(limit)).ok();
            let mut rest = buf[..usize::from(early)].to_vec();
            let mut more = [0u8; 4096];
            while !complete(&rest) {
                match s.read(&mut more) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => rest.extend_from_slice(&more[..n]),
                }
            }
            Some((early, parse_response(&rest)))
        })
    };
    let mut report = Vec::new();
    for t in slow {
        let (what, (closed_after, answer)) = t.join().expect("a slow client panicked");
        let closed_after = closed_after
            .unwrap_or_else(|| panic!("{what}: the server never closed the connection"));
        let (status, body) = parse_response(&answer);
        if what == "socket slow body" {
            assert_eq!(status, 408, "{what}: {}", String::from_utf8_lossy(&answer));
            assert!(body.contains("body_timeout"), "{body}");
        }
        report.push(format!(
            "{what}: closed after {:.0} s",
            closed_after.as_secs_f64()
        ));
    }
    let (early, (status, body)) = waiting
        .join()
        .expect("the waiting client panicked")
        .expect("the waiting client could not connect");
    assert!(
        early,
        "a connection past socket.max_connections waited while idle connections held the slots"
    );
    assert_eq!(status, 202, "the waiting client: {body}");
    report.sort();
    report.dedup_by(|a, b| a.split(':').next() == b.split(':').next());

    // It still serves, and did not panic.
    let r = d.post("/v1/messages", &parked(template_request("+14155550123")));
    assert_eq!(r.status, 202, "{}", r.text());
    let log = d.log();
    assert!(
        !log.contains("panicked"),
        "the daemon panicked:\n{}",
        log.lines()
            .filter(|l| l.contains("panicked"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let rss_after = vm_rss_kib(pid);
    eprintln!(
        "bad input: {total} hostile requests: {} answered 4xx with a body, {} bare 4xx from the \
         HTTP parser, {} closed without an answer, {} accepted (valid by chance); VmRSS {} KiB \
         before, {} KiB after the flood, {} KiB at the end; slow connections: {}",
        tally.json_4xx.load(Ordering::Relaxed),
        tally.bare_4xx.load(Ordering::Relaxed),
        tally.closed.load(Ordering::Relaxed),
        tally.ok_2xx.load(Ordering::Relaxed),
        rss_before,
        rss_flood,
        rss_after,
        report.join("; ")
    );
    assert!(
        rss_after < rss_before + 128 * 1024,
        "memory grew from {rss_before} KiB to {rss_after} KiB"
    );
}
