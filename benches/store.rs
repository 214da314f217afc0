//! The durable enqueue path: insert + group commit (flush + fsync) at several concurrencies.
//! Throughput per message should grow with concurrency, since concurrent commits share a flush.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use waq::config::StoreConfig;
use waq::store::Store;

mod common;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        Store::open(
            dir.path(),
            &StoreConfig {
                cache_capacity_bytes: 64 * 1024 * 1024,
                flush_every_ms: Some(500),
            },
        )
        .unwrap(),
    );
    let mut group = c.benchmark_group("store/durable_enqueue");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    for concurrency in [1usize, 8, 64, 256] {
        // Each iteration: `concurrency` producers each insert one message and wait for its commit.
        group.throughput(Throughput::Elements(concurrency as u64));
        group.bench_function(format!("concurrency_{concurrency}"), |b| {
            b.iter_custom(|iters| {
                let store = store.clone();
                rt.block_on(async move {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let mut tasks = Vec::with_capacity(concurrency);
                        for i in 0..concurrency {
                            let store = store.clone();
                            tasks.push(tokio::spawn(async move {
                                let id = store.next_id().unwrap();
                                let mut m = common::template_message(id, &format!("1415555{i:04}"));
                                m.idempotency_key = None;
                                store.insert_new(&m).unwrap();
                                store.commit().await.unwrap();
                            }));
                        }
                        for t in tasks {
                            t.await.unwrap();
                        }
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
