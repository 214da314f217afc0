//! The scheduler's pick-next: with 10^4 and 10^6 messages queued across 10^5 recipients, pick the
//! next message and complete it (the steady state of a busy sender).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use waq::dispatch::queue::{Entry, Next, Outcome, PairLimit, SenderQueue};
use waq::model::Priority;

const PAIR: PairLimit = PairLimit {
    interval_ms: 6_000,
    burst: 45,
};
const NOW: u64 = 1_764_000_000_000;

fn filled(messages: u64, recipients: u64) -> SenderQueue {
    let mut q = SenderQueue::new();
    for id in 0..messages {
        let to = format!("1415{:07}", id % recipients);
        q.push(
            &Entry {
                id,
                to,
                priority: if id % 10 == 0 {
                    Priority::High
                } else {
                    Priority::Normal
                },
                due_ms: NOW,
                expires_at_ms: None,
                retry_at_ms: None,
                held: false,
            },
            NOW,
            PAIR,
        );
    }
    q
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("scheduler/pick_next_and_complete");
    for messages in [10_000u64, 1_000_000] {
        let q = filled(messages, 100_000);
        let mut q = q;
        let mut now = NOW;
        group.bench_function(format!("queued_{messages}"), |b| {
            b.iter_batched(
                || (),
                |_| {
                    // Time moves on so pair budgets refill and the queue never runs dry of ready lanes.
                    now += 1;
                    match q.next(now, PAIR) {
                        Next::Send { id, to } => {
                            q.complete(&to, Outcome::Retry { at_ms: now + 1 }, now, PAIR);
                            id
                        }
                        _ => 0,
                    }
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
