//! Chapter 2: customers reply; Meta's webhook reaches the daemon's listener, which opens their
//! windows, and the follow-up text goes out free-form to them (and as the template to the
//! customer who did not reply).

use std::time::{Duration, Instant};

use anyhow::bail;

use super::first_contact::{shipped_text, ACCEPTED};
use super::people::{Customer, NEW_CUSTOMERS, REPLYING};
use super::stage::Stage;
use super::ui::Ui;
use super::Tally;

pub async fn play(stage: &Stage, ui: &Ui, tally: &mut Tally) -> anyhow::Result<()> {
    ui.chapter(2, "Customers reply: windows open");
    let replying: Vec<&Customer> = REPLYING.iter().map(|&i| &NEW_CUSTOMERS[i]).collect();
    let silent = &NEW_CUSTOMERS[2];
    for c in &replying {
        stage
            .sim
            .inbound(
                c.number,
                c.name,
                "Thanks! Can you leave it with the neighbour?",
            )
            .await?;
    }
    ui.say(&format!(
        "{} and {} reply on WhatsApp. Meta's signed webhook reaches waq's listener:",
        replying[0].name, replying[1].name
    ));
    for c in &replying {
        let until = wait_open(stage, c).await?;
        ui.quote(&format!("{}'s window is open until {until}", c.name));
    }
    ui.blank();

    ui.say(&format!(
        "A follow-up text (same fallback) to {}, {} and {}, who has not written:",
        replying[0].name, replying[1].name, silent.name
    ));
    let mut ids = Vec::new();
    let mut who = Vec::new();
    for c in replying.iter().copied().chain([silent]) {
        ids.push(stage.waq.enqueue(&shipped_text(c, true)).await?);
        who.push(c);
    }
    let done = stage
        .waq
        .wait_for(&ids, &ACCEPTED, Duration::from_secs(30))
        .await?;
    for (m, c) in done.iter().zip(&who) {
        match m["substituted_template"].as_str() {
            None => {
                tally.free_form_sent += 1;
                ui.quote(&format!("{:<5} free-form text", c.name));
            }
            Some(t) => {
                tally.fallback_sent += 1;
                ui.quote(&format!("{:<5} template {t} (window still closed)", c.name));
            }
        }
    }
    if tally.free_form_sent != replying.len() as u64 {
        bail!("expected the customers who replied to get the free-form text");
    }
    ui.ok("free-form where the window is open, the template where it is not: Meta fails none of them (131047)");
    Ok(())
}

/// Waits until the daemon has applied the inbound webhook; returns the window's end.
async fn wait_open(stage: &Stage, c: &Customer) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(until) = stage.waq.window_open(c.number).await? {
            return Ok(until);
        }
        if Instant::now() > deadline {
            bail!(
                "{}'s reply never reached the daemon (webhook from the simulator to waq's listener); daemon log:\n{}",
                c.name,
                stage.daemon.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
