//! Chapter 5: Meta has a short outage (every request answered 503, error 2). waq backs off with
//! jitter and retries until every message is sent.

use std::time::{Duration, Instant};

use anyhow::bail;

use super::burst::order_update;
use super::people::outage_recipient;
use super::stage::Stage;
use super::ui::{n, Ui};
use super::Tally;

const OUTAGE: Duration = Duration::from_millis(2500);

pub async fn play(stage: &Stage, ui: &Ui, tally: &mut Tally, messages: u32) -> anyhow::Result<()> {
    ui.chapter(5, "A transient outage");
    ui.say(&format!(
        "Meta answers every request with 503 (error 2, service unavailable) for {:.1} s, just as",
        OUTAGE.as_secs_f64()
    ));
    ui.say(&format!(
        "{} shipping notices are enqueued. waq retries with exponential backoff and jitter:",
        n(u64::from(messages))
    ));
    let base = stage.waq.stats().await?;
    stage.sim.outage(OUTAGE).await?;
    let started = Instant::now();
    let mut ids = Vec::new();
    for i in 0..messages {
        ids.push(
            stage
                .waq
                .enqueue(&order_update(
                    &outage_recipient(i),
                    &format!("customer {}", i + 1),
                ))
                .await?,
        );
    }
    let total = ids.len() as u64;
    let mut bars = ui.bars(&[("sent", total), ("retrying", total)]);
    let retries = loop {
        let s = stage.waq.stats().await?;
        let accepted = s.accepted().saturating_sub(base.accepted());
        let failed = s.state("failed").saturating_sub(base.state("failed"));
        let retrying = s.state("retrying");
        let retries = s
            .counter("retries_scheduled")
            .saturating_sub(base.counter("retries_scheduled"));
        let outage_over = started.elapsed() >= OUTAGE;
        bars.set(
            0,
            accepted,
            if outage_over {
                "Meta is back".into()
            } else {
                "Meta is down".into()
            },
        );
        bars.set(1, retrying, format!("{} retries so far", n(retries)));
        let done = s.queue_depth == 0;
        bars.plain(done, || {
            format!(
                "sent {}/{} · retrying {} · {} retries so far",
                n(accepted),
                n(total),
                n(retrying),
                n(retries)
            )
        });
        if done {
            if failed > 0 {
                bail!("{failed} messages failed during the outage; see `waq ls --state failed`");
            }
            bars.set(1, retrying, format!("{} retries in all", n(retries)));
            break retries;
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!(
                "the messages were not sent within 60 s of the outage ({} of {} sent)",
                n(accepted),
                n(total)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    bars.finish();
    stage.sim.clear_faults().await?;
    tally.outage_messages = total;
    tally.outage_retries = retries;
    ui.ok(&format!(
        "all {} sent {:.1} s after the outage began, after {} retries; none lost, none failed",
        n(total),
        started.elapsed().as_secs_f64(),
        n(retries)
    ));
    Ok(())
}
