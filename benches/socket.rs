//! End to end over the socket: the real daemon (this package's `waq serve`, default settings
//! but for the paths) and durable single enqueues (202 after flush + fsync) from 1 and 64
//! keep-alive connections, and batches of 1,000. What a producer sees, parse to fsync.
//! `waq bench` is the full load run; this keeps a regression check in `cargo bench`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hyper::body::Bytes;
use waq::loadrun::client::{raw_request, RawConn};

struct Daemon {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_daemon() -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("waq.sock");
    let config = dir.path().join("waq.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {:?}\n[log]\nlevel = \"warn\"\n[socket]\npath = {:?}\n[api]\nbase_url = \"http://127.0.0.1:9\"\n\
             [[senders]]\nname = \"main\"\nphone_number_id = \"120000000000001\"\ntoken = \"bench\"\n",
            dir.path().join("state").display().to_string(),
            socket.display().to_string()
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_waq"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "the daemon did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    Daemon {
        child,
        socket,
        _dir: dir,
    }
}

/// Far enough ahead to stay queued, within the year ahead that `send_at` may be.
fn parked_until() -> String {
    waq::model::format_time(waq::model::now_ms() + 300 * 86_400_000)
}

/// A parked template send (never dispatched), to the `n`-th recipient.
fn request(n: u64) -> String {
    format!(
        r#"{{"to":"+1415{:07}","message":{{"type":"template","template":{{"name":"hello_world","language":{{"code":"en_US"}}}}}},"send_at":"{}"}}"#,
        n % 10_000_000,
        parked_until()
    )
}

async fn connections(socket: &Path, n: usize) -> Vec<RawConn> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(RawConn::open(socket).await.unwrap());
    }
    out
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let daemon = start_daemon();
    let single: Vec<Bytes> = (0..1024)
        .map(|n| raw_request("POST", "/v1/messages", request(n).as_bytes()))
        .collect();
    let batch = {
        let items: Vec<String> = (0..1000).map(request).collect();
        raw_request(
            "POST",
            "/v1/messages/batch",
            format!("[{}]", items.join(",")).as_bytes(),
        )
    };

    let mut group = c.benchmark_group("socket/enqueue");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(4));
    group.warm_up_time(Duration::from_secs(1));
    for conns in [1usize, 64] {
        // Each iteration: every connection sends one request and waits for its 202.
        group.throughput(Throughput::Elements(conns as u64));
        group.bench_function(format!("single_{conns}_connections"), |b| {
            let mut pool = rt.block_on(connections(&daemon.socket, conns));
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for i in 0..iters {
                        let sends = pool.iter_mut().enumerate().map(|(k, conn)| {
                            let req = &single[(i as usize * conns + k) % single.len()];
                            async move {
                                let (status, _) = conn.exchange(req).await.unwrap();
                                assert_eq!(status, 202);
                            }
                        });
                        futures_join_all(sends).await;
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.throughput(Throughput::Elements(1000));
    group.bench_function("batch_1000", |b| {
        let mut conn = rt.block_on(RawConn::open(&daemon.socket)).unwrap();
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let (status, _) = conn.exchange(&batch).await.unwrap();
                    assert_eq!(status, 200);
                }
                start.elapsed()
            })
        })
    });
    group.finish();
}

/// Runs the futures concurrently on this task and waits for all of them.
async fn futures_join_all<F: std::future::Future<Output = ()>>(futures: impl Iterator<Item = F>) {
    let mut set: Vec<std::pin::Pin<Box<F>>> = futures.map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        set.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if set.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}

criterion_group!(benches, bench);
criterion_main!(benches);
