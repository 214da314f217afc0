//! The generators: closed-loop (every connection sends its next request as soon as the answer
//! arrives: throughput) and open-loop (requests at a fixed rate whatever the answers do:
//! latency, measured from when each request was due so queueing counts).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use hyper::body::Bytes;

use super::client::{raw_request, RawConn};
use super::daemon::{own_cpu_seconds, Daemon};

/// Far enough ahead that the dispatcher leaves the message queued, and within the year ahead
/// that `send_at` may be: 300 days from now, to the second (as long as a fixed date would be).
pub fn parked_until() -> String {
    let at = crate::model::now_ms() / 1000 + 300 * 86_400;
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(at))
        .to_string()
}

/// A template send request (~150 bytes, the shape most producers send) to the `n`-th recipient,
/// due at `send_at` (RFC 3339).
pub fn send_request(n: u64, send_at: &str) -> String {
    format!(
        r#"{{"to":"+1415{:07}","message":{{"type":"template","template":{{"name":"hello_world","language":{{"code":"en_US"}}}}}},"metadata":{{"order":{n}}},"send_at":"{send_at}"}}"#,
        n % 10_000_000
    )
}

/// A batch body: `count` requests to recipients `first..first+count`.
pub fn batch_request(first: u64, count: u64, send_at: &str) -> String {
    let mut out = String::with_capacity(count as usize * 170 + 2);
    out.push('[');
    for n in first..first + count {
        if n > first {
            out.push(',');
        }
        out.push_str(&send_request(n, send_at));
    }
    out.push(']');
    out
}

/// What one closed-loop measurement saw, over its measured window only.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    /// Messages accepted per second.
    pub rate: f64,
    /// CPU seconds per second (1.0 = one core) of the daemon and of this process.
    pub daemon_cpu: f64,
    pub generator_cpu: f64,
    /// Group commits (fsyncs) per second in the daemon.
    pub commits_per_s: f64,
}

/// Requests of a closed loop: the complete requests to cycle through (`raw_request`), messages
/// per request.
pub struct Work {
    pub requests: Arc<Vec<Bytes>>,
    pub per_request: u64,
    pub connections: usize,
}

/// Runs `work` for `warmup` + `measure`; the rate counts only what completed in `measure`.
pub async fn closed_loop(
    daemon: &Daemon,
    work: Work,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<Throughput> {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::with_capacity(work.connections);
    for i in 0..work.connections {
        let (socket, requests, done, stop) = (
            daemon.socket.clone(),
            work.requests.clone(),
            done.clone(),
            stop.clone(),
        );
        let (per, step) = (work.per_request, work.connections);
        tasks.push(tokio::spawn(async move {
            let mut conn = RawConn::open(&socket).await?;
            let mut k = i;
            while !stop.load(Relaxed) {
                let request = &requests[k % requests.len()];
                k += step;
                let (status, body) = conn.exchange(request).await?;
                let accepted = match status {
                    202 => per,
                    200 => count(body, br#""state":"queued""#),
                    s => bail!("the daemon answered {s}: {}", String::from_utf8_lossy(body)),
                };
                if accepted != per {
                    bail!("only {accepted} of {per} messages accepted");
                }
                done.fetch_add(accepted, Relaxed);
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    tokio::time::sleep(warmup).await;
    let before = Sample::take(daemon, &done).await?;
    tokio::time::sleep(measure).await;
    let after = Sample::take(daemon, &done).await?;
    stop.store(true, Relaxed);
    for t in tasks {
        t.await.context("a generator task panicked")??;
    }
    let secs = after.at.duration_since(before.at).as_secs_f64();
    Ok(Throughput {
        rate: (after.done - before.done) as f64 / secs,
        daemon_cpu: (after.daemon_cpu - before.daemon_cpu) / secs,
        generator_cpu: (after.own_cpu - before.own_cpu) / secs,
        commits_per_s: (after.commits - before.commits) as f64 / secs,
    })
}

struct Sample {
    at: Instant,
    done: u64,
    daemon_cpu: f64,
    own_cpu: f64,
    commits: u64,
}

impl Sample {
    async fn take(daemon: &Daemon, done: &AtomicU64) -> anyhow::Result<Sample> {
        let commits = commits(&daemon.socket).await?;
        Ok(Sample {
            at: Instant::now(),
            done: done.load(Relaxed),
            daemon_cpu: daemon.cpu_seconds()?,
            own_cpu: own_cpu_seconds()?,
            commits,
        })
    }
}

async fn commits(socket: &Path) -> anyhow::Result<u64> {
    let s = super::client::stats(socket).await?;
    Ok(s["commit"]["commits"].as_u64().unwrap_or(0))
}

/// Occurrences of `needle` in `hay`.
fn count(hay: &[u8], needle: &[u8]) -> u64 {
    hay.windows(needle.len()).filter(|w| *w == needle).count() as u64
}

/// What an open-loop run saw: latencies in microseconds over the measured part.
#[derive(Debug, Clone)]
pub struct Latency {
    pub achieved: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub samples: usize,
    pub generator_cpu: f64,
    pub daemon_cpu: f64,
}

/// Offers `rate` requests per second for `warmup` + `measure` over `connections` connections.
/// Each request's latency runs from when it was due (or from when it was actually written, if
/// a connection was free and the timer woke late), so requests that waited for a busy
/// connection count their wait.
pub async fn open_loop(
    daemon: &Daemon,
    requests: Arc<Vec<Bytes>>,
    connections: usize,
    rate: f64,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<Latency> {
    let interval = Duration::from_secs_f64(1.0 / rate);
    let skip = (warmup.as_secs_f64() * rate) as u64;
    let total = skip + (measure.as_secs_f64() * rate) as u64;
    let next = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now() + Duration::from_millis(50);
    let cpu0 = (daemon.cpu_seconds()?, own_cpu_seconds()?);
    let mut tasks = Vec::with_capacity(connections);
    for _ in 0..connections {
        let (socket, requests, next): (PathBuf, _, _) =
            (daemon.socket.clone(), requests.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = RawConn::open(&socket).await?;
            let mut lat = Vec::with_capacity((total / connections as u64 + 16) as usize);
            loop {
                let k = next.fetch_add(1, Relaxed);
                if k >= total {
                    break;
                }
                let due = t0 + interval * k as u32;
                let claimed = Instant::now();
                let start = if claimed >= due {
                    due
                } else {
                    tokio::time::sleep_until(due.into()).await;
                    Instant::now()
                };
                let request = &requests[k as usize % requests.len()];
                let (status, body) = conn.exchange(request).await?;
                if status != 202 {
                    bail!(
                        "POST /v1/messages answered {status}: {}",
                        String::from_utf8_lossy(body)
                    );
                }
                let end = Instant::now();
                if k >= skip {
                    lat.push((end.duration_since(start).as_micros() as u64, end));
                }
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let mut all = Vec::with_capacity((total - skip) as usize);
    for t in tasks {
        all.extend(t.await.context("a generator task panicked")??);
    }
    let cpu1 = (daemon.cpu_seconds()?, own_cpu_seconds()?);
    let measured_from = t0 + interval * skip as u32;
    let last = all.iter().map(|(_, e)| *e).max().unwrap_or(measured_from);
    let span = last.duration_since(measured_from).as_secs_f64().max(1e-3);
    let mut us: Vec<u64> = all.iter().map(|(l, _)| *l).collect();
    us.sort_unstable();
    let pct = |p: f64| -> u64 {
        if us.is_empty() {
            return 0;
        }
        let i = ((us.len() as f64 * p).ceil() as usize).clamp(1, us.len()) - 1;
        us[i]
    };
    let whole = t0.elapsed().as_secs_f64();
    Ok(Latency {
        achieved: us.len() as f64 / span,
        p50_us: pct(0.50),
        p90_us: pct(0.90),
        p99_us: pct(0.99),
        p999_us: pct(0.999),
        max_us: us.last().copied().unwrap_or(0),
        samples: us.len(),
        daemon_cpu: (cpu1.0 - cpu0.0) / whole,
        generator_cpu: (cpu1.1 - cpu0.1) / whole,
    })
}

/// Enqueues `total` messages through the batch endpoint (`per_batch` per request, `connections`
/// requests at once) to recipients starting at `first`; returns the seconds it took.
pub async fn fill(
    socket: &Path,
    first: u64,
    total: u64,
    per_batch: u64,
    connections: usize,
    send_at: &str,
) -> anyhow::Result<f64> {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (socket, next, send_at) = (socket.to_path_buf(), next.clone(), send_at.to_string());
        tasks.push(tokio::spawn(async move {
            let mut conn = RawConn::open(&socket).await?;
            loop {
                let from = next.fetch_add(per_batch, Relaxed);
                if from >= total {
                    break;
                }
                let n = per_batch.min(total - from);
                let body = batch_request(first + from, n, &send_at);
                let request = raw_request("POST", "/v1/messages/batch", body.as_bytes());
                let (status, answer) = conn.exchange(&request).await?;
                let ok = count(answer, br#""state":"queued""#);
                if status != 200 || ok != n {
                    bail!("POST /v1/messages/batch answered {status} with {ok} of {n} accepted");
                }
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await.context("a fill task panicked")??;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Sends exactly `total` of `requests` (cycled) over `connections`; returns the seconds it took.
/// For profiling: a fixed amount of work, so instruction counts compare between builds.
pub async fn fixed(
    socket: &Path,
    requests: Arc<Vec<Bytes>>,
    total: u64,
    connections: usize,
) -> anyhow::Result<f64> {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (socket, next, requests) = (socket.to_path_buf(), next.clone(), requests.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = RawConn::open(&socket).await?;
            loop {
                let k = next.fetch_add(1, Relaxed);
                if k >= total {
                    break;
                }
                let (status, body) = conn
                    .exchange(&requests[k as usize % requests.len()])
                    .await?;
                if !(200..300).contains(&status) {
                    bail!(
                        "the daemon answered {status}: {}",
                        String::from_utf8_lossy(body)
                    );
                }
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await.context("a generator task panicked")??;
    }
    Ok(started.elapsed().as_secs_f64())
}
