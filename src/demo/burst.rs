//! Chapter 3: a burst of sends enqueued in one batch and paced at the number's MPS, with a live
//! rate bar (the daemon's sends in the last second against the limit) and the receipts coming in.

use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::{json, Value};

use super::people::{burst_recipient, PHONE_NUMBER_ID};
use super::stage::Stage;
use super::ui::{n, Ui};
use super::Tally;

pub fn order_update(to: &str, name: &str) -> Value {
    json!({
        "to": to,
        "message": {"type": "template", "template": {
            "name": "order_update",
            "language": {"code": "en_US"},
            "components": [{"type": "body", "parameters": [{"type": "text", "text": name}]}]
        }},
    })
}

/// Writes the machine's pending disk writes out before the burst is timed. Run right after
/// `cargo build`, the demo would otherwise share the CPU with the kernel writing back the
/// build's gigabytes, whose stalls can hold a request back past the departure gate's 8 ms
/// margin, and the simulator then counts 201 in a second: the build's doing, not waq's. A
/// second or so here; the daemon's own writes are fsync'd as always. Without a `sync` command
/// on the machine the burst starts at once.
async fn settle_disk() {
    let _ = tokio::task::spawn_blocking(|| {
        std::process::Command::new("sync")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
    })
    .await;
}

pub async fn play(stage: &Stage, ui: &Ui, tally: &mut Tally, messages: u32) -> anyhow::Result<()> {
    let mps = u64::from(stage.mps);
    ui.chapter(
        3,
        &format!(
            "A burst: {} sends, paced at {mps}/s",
            n(u64::from(messages))
        ),
    );
    ui.say(&format!(
        "A flash sale: {} customers get the order-update template at once. Meta allows this",
        n(u64::from(messages))
    ));
    ui.say(&format!(
        "number {mps} messages per second (more earns error 130429); waq paces its sends to that."
    ));
    settle_disk().await;
    let base = stage.waq.stats().await?;
    let requests: Vec<Value> = (0..messages)
        .map(|i| order_update(&burst_recipient(i), &format!("customer {}", i + 1)))
        .collect();
    let started = Instant::now();
    let ids = stage.waq.enqueue_batch(&requests).await?;
    ui.say(&format!(
        "POST /v1/messages/batch: {} messages on disk (one fsync) before the answer, in {} ms.",
        n(ids.len() as u64),
        started.elapsed().as_millis()
    ));
    let total = ids.len() as u64;
    let expected = Duration::from_secs_f64(total as f64 / mps as f64);
    let patience = expected * 3 + Duration::from_secs(60);

    let mut bars = ui.bars(&[
        ("sends/s", mps),
        ("sent", total),
        ("delivered", total),
        ("read", total),
    ]);
    let mut peak = 0u64;
    let mut sending_took: Option<Duration> = None;
    loop {
        let s = stage.waq.stats().await?;
        let pending_hooks = stage.sim.stats().await.webhooks_pending;
        let rate = s.sent_last_second;
        peak = peak.max(rate);
        let accepted = s.accepted().saturating_sub(base.accepted());
        let delivered = s.delivered().saturating_sub(base.delivered());
        let read = s.state("read").saturating_sub(base.state("read"));
        let failed = s.state("failed").saturating_sub(base.state("failed"));
        let drained = s.queue_depth == 0;
        if drained && sending_took.is_none() {
            sending_took = Some(started.elapsed());
        }
        bars.set(
            0,
            rate.min(mps),
            format!("now {rate}/s · peak {peak}/s · limit {mps}/s"),
        );
        bars.set(1, accepted, format!("{} in flight", s.in_flight));
        bars.set(2, delivered, String::new());
        bars.set(3, read, String::new());
        let settled = drained && s.state("sent") == 0 && pending_hooks == 0;
        bars.plain(settled, || {
            format!(
                "sent {}/{} · {rate}/s (limit {mps}/s) · delivered {} · read {}",
                n(accepted),
                n(total),
                n(delivered),
                n(read)
            )
        });
        if settled {
            if failed > 0 {
                bail!("{failed} messages of the burst failed; see `waq ls --state failed`");
            }
            break;
        }
        if started.elapsed() > patience {
            bail!(
                "the burst was not sent within {} s ({} of {} sent)",
                patience.as_secs(),
                n(accepted),
                n(total)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bars.set(0, peak.min(mps), format!("peak {peak}/s · limit {mps}/s"));
    bars.finish();

    let took = sending_took.unwrap_or_else(|| started.elapsed());
    let sim = stage.sim.stats().await;
    let busiest = sim
        .numbers
        .get(PHONE_NUMBER_ID)
        .map_or(0, |s| s.max_in_window);
    tally.burst_seconds = took.as_secs_f64();
    ui.ok(&format!(
        "{} sent in {:.1} s; the most Meta saw in any one second: {busiest} requests (limit {mps})",
        n(total),
        took.as_secs_f64(),
    ));
    Ok(())
}
