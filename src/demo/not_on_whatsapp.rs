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
            "{number}  failed after {} attempt, Meta error {}: {}",
            m["attempts"],
            e["meta_code"],
            readable(e["message"].as_str().unwrap_or("?"))
        ));
    }
    ui.ok("failed at once with Meta's code 131026, no retries spent; `waq ls --state failed` lists them");
    Ok(())
}

/// Meta's error text without what repeats the code or only helps Meta's support: `(#131026)
/// Message undeliverable (fbtrace_id Ab1): details` reads `Message undeliverable: details`.
fn readable(message: &str) -> String {
    let text = match message.strip_prefix("(#") {
        Some(rest) => rest.split_once(") ").map_or(message, |(_, t)| t),
        None => message,
    };
    match text.split_once(" (fbtrace_id ") {
        Some((head, tail)) => match tail.split_once(')') {
            Some((_, rest)) => format!("{head}{rest}"),
            None => head.to_string(),
        },
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn metas_code_and_trace_id_are_left_out() {
        assert_eq!(
            super::readable("(#131026) Message undeliverable (fbtrace_id Ab1x): Unable to deliver"),
            "Message undeliverable: Unable to deliver"
        );
        assert_eq!(super::readable("plain"), "plain");
    }
}
