//! Chapter 1: a first-contact text is refused at enqueue (the 24-hour window is closed and
//! there is no fallback); with `fallback_template` it is sent as that template.

use std::time::Duration;

use serde_json::{json, Value};

use super::people::{Customer, NEW_CUSTOMERS};
use super::stage::Stage;
use super::ui::Ui;
use super::Tally;

/// States in which Meta has accepted a message.
pub const ACCEPTED: [&str; 3] = ["sent", "delivered", "read"];

/// A free-form text, with the order-update template as its fallback when `fallback` is set.
pub fn shipped_text(c: &Customer, fallback: bool) -> Value {
    let mut request = json!({
        "to": c.number,
        "message": {"type": "text", "text": {"body": format!("Hi {}, your order has shipped and arrives Friday.", c.name)}},
        "metadata": {"customer": c.name},
    });
    if fallback {
        request["fallback_template"] = json!({
            "name": "order_update",
            "language": {"code": "en_US"},
            "components": [{"type": "body", "parameters": [{"type": "text", "text": c.name}]}]
        });
    }
    request
}

pub async fn play(stage: &Stage, ui: &Ui, tally: &mut Tally) -> anyhow::Result<()> {
    ui.chapter(1, "First contact: the 24-hour window");
    ui.say("Ann, Ben, Cleo, Dev and Eve just placed their first orders. None of them has written");
    ui.say("to us yet, so WhatsApp allows only approved templates until they do.");
    ui.blank();

    let ann = &NEW_CUSTOMERS[0];
    ui.say(&format!(
        "A plain text to {} ({}) without a fallback:",
        ann.name, ann.number
    ));
    let refused = stage.waq.send(&shipped_text(ann, false)).await?;
    let (code, message) = refused.error();
    if refused.status != 422 || code != "window_closed" {
        anyhow::bail!(
            "expected 422 window_closed for a first-contact text, got {}: {}",
            refused.status,
            refused.body
        );
    }
    tally.refused_at_enqueue += 1;
    ui.quote(&format!("422 {code}: {message}"));
    ui.ok("refused at enqueue: no API call spent, nothing for Meta to drop silently");
    ui.blank();

    ui.say("The same text with \"fallback_template\": order_update, to all five:");
    let mut ids = Vec::new();
    for c in &NEW_CUSTOMERS {
        ids.push(stage.waq.enqueue(&shipped_text(c, true)).await?);
    }
    let done = stage
        .waq
        .wait_for(&ids, &ACCEPTED, Duration::from_secs(30))
        .await?;
    let substituted = done
        .iter()
        .filter(|m| m["substituted_template"] == "order_update")
        .count();
    if substituted != NEW_CUSTOMERS.len() {
        anyhow::bail!("expected every first-contact text to go out as its fallback template");
    }
    tally.fallback_sent += substituted as u64;
    if let Some(m) = done.first() {
        ui.quote(&format!(
            "{}'s message {}:",
            ann.name,
            m["id"].as_str().unwrap_or("?")
        ));
        for h in m["history"].as_array().into_iter().flatten() {
            let state = h["state"].as_str().unwrap_or("?");
            // A detail that only repeats the state says nothing more.
            let detail = h["detail"].as_str().filter(|d| *d != state).unwrap_or("");
            ui.quote(format!("  {state:<9} {detail}").trim_end());
        }
    }
    ui.ok(&format!(
        "{substituted} of 5 sent as template order_update: the window was closed, the fallback went out instead"
    ));
    Ok(())
}
