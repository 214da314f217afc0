//! Load check of the simulator: sends at well over 1,000 requests/s with 100 ms injected
//! latency while status webhooks flow to a local receiver. Not part of the normal run:
//! `cargo test --release --test sim_load -- --ignored --nocapture`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::post;
use axum::Router;
use serde_json::json;
use waq::sim::{self, SimConfig};

const REQUESTS: usize = 6_000;
const CONCURRENCY: usize = 256;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load check; run on demand in release mode"]
async fn serves_over_1000_per_second_with_100ms_latency() {
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let app = Router::new().route(
        "/webhook",
        post(move |body: axum::body::Bytes| {
            let counter = counter.clone();
            async move {
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) {
                    let n = v["entry"][0]["changes"][0]["value"]["statuses"]
                        .as_array()
                        .map_or(0, Vec::len);
                    counter.fetch_add(n as u64, Ordering::Relaxed);
                }
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let url = format!("http://{}/webhook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut cfg = SimConfig::default();
    cfg.numbers[0].mps = 100_000;
    cfg.faults.latency_ms = 100;
    cfg.window.enforce = false;
    cfg.webhook.url = Some(url);
    cfg.statuses.sent_ms = 10;
    cfg.statuses.delivered_ms = 50;
    cfg.statuses.read_ms = 100;
    let sim = sim::start(cfg, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let endpoint = format!("{}/v23.0/120000000000001/messages", sim.base_url());
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(CONCURRENCY)
        .build()
        .unwrap();

    let next = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (client, endpoint, next) = (client.clone(), endpoint.clone(), next.clone());
        workers.spawn(async move {
            let mut ok = 0u64;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= REQUESTS {
                    return ok;
                }
                let body = json!({"messaging_product": "whatsapp", "to": format!("1415{:07}", i % 5000),
                                  "type": "text", "text": {"body": "load"}});
                let resp = client
                    .post(&endpoint)
                    .bearer_auth("sim-token")
                    .json(&body)
                    .send()
                    .await;
                if let Ok(r) = resp {
                    if r.status().is_success() && r.bytes().await.is_ok() {
                        ok += 1;
                    }
                }
            }
        });
    }
    let mut ok = 0;
    while let Some(n) = workers.join_next().await {
        ok += n.unwrap();
    }
    let elapsed = t0.elapsed();
    let rate = REQUESTS as f64 / elapsed.as_secs_f64();
    // Let the last statuses go out.
    let deadline = Instant::now() + Duration::from_secs(10);
    while sim.stats().await.webhooks_pending > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = sim.stats().await;
    eprintln!(
        "{REQUESTS} requests in {elapsed:?}: {rate:.0}/s, {ok} accepted; max in a 1 s window {}; \
         {} status webhooks in {} POSTs ({} received), {} failed",
        stats.numbers["120000000000001"].max_in_window,
        stats.webhooks.statuses,
        stats.webhooks.sent,
        received.load(Ordering::Relaxed),
        stats.webhooks.failed,
    );
    assert_eq!(ok as usize, REQUESTS);
    assert!(rate > 1_000.0, "only {rate:.0} requests/s");
    assert_eq!(stats.webhooks.statuses, 3 * REQUESTS as u64);
    sim.shutdown().await;
}
