//! Chapter 4: numbers that have no WhatsApp account. Meta answers 131026; waq fails those
//! messages at once with Meta's code (a permanent error: retrying would not help).

use std::time::Duration;

use anyhow::bail;

use super::burst::order_update;
use super::people::NOT_ON_WHATSAPP;
use super::stage::Stage;
use super::ui::Ui;

pub async fn play(stage: &Stage, ui: &Ui) -> anyhow::Result<()> {
    ui.chapter(4, "Numbers not on WhatsApp");
    ui.say("Three numbers from an old import have no WhatsApp account:");
    let mut ids = Vec::new();
    for (i, number) in NOT_ON_WHATSAPP.iter().enumerate() {
        ids.push(
            stage
                .waq
                .enqueue(&order_update(number, &format!("lead {}", i + 1)))
                .await?,
        );
    }
    let done = stage
        .waq
        .wait_for(
            &ids,
            &["failed", "sent", "delivered", "read"],
            Duration::from_secs(30),
        )
        .await?;
    for (m, number) in done.iter().zip(NOT_ON_WHATSAPP) {
        let e = &m["last_error"];
        if m["state"] != "failed" || e["meta_code"] != 131026 {
            bail!("expected {number} to fail with Meta's code 131026, got {m}");
        }
        ui.quote(&format!(
            "{number}  failed after {} attempt: {} (Meta error {})",
            m["attempts"],
            e["message"].as_str().unwrap_or("?"),
            e["meta_code"]
        ));
    }
    ui.ok("failed at once with Meta's code 131026, no retries spent; `waq ls --state failed` lists them");
    Ok(())
}
