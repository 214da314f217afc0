//! The closing table: what the daemon's store says happened to every message, and what the
//! simulator (standing in for Meta) saw: its busiest second and the rule violations it counted.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::bail;

use super::people::PHONE_NUMBER_ID;
use super::stage::Stage;
use super::ui::{n, Ui};
use super::Tally;

pub struct Report {
    enqueued: u64,
    accepted: u64,
    delivered: u64,
    read: u64,
    failed: BTreeMap<String, u64>,
    busiest_second: u64,
    limit: u64,
    v131047: u64,
    v130429: u64,
    outage_answers: u64,
    tally: Tally,
    took: Duration,
}

/// Waits for the last receipts, then collects the figures.
pub async fn gather(stage: &Stage, tally: &Tally, took: Duration) -> anyhow::Result<Report> {
    let stats = stage.settle(Duration::from_secs(60)).await?;
    let mut failed = BTreeMap::new();
    for m in stage.waq.list("failed").await? {
        let e = &m["last_error"];
        let reason = match (e["code"].as_str(), e["meta_code"].as_i64()) {
            (_, Some(131026)) => "131026 not on WhatsApp".to_string(),
            (Some(code), _) => code.to_string(),
            (None, _) => "unknown".to_string(),
        };
        *failed.entry(reason).or_insert(0) += 1;
    }
    let sim = stage.sim.stats().await;
    let number = sim
        .numbers
        .get(PHONE_NUMBER_ID)
        .cloned()
        .unwrap_or_default();
    Ok(Report {
        enqueued: stats.total(),
        accepted: stats.accepted(),
        delivered: stats.delivered(),
        read: stats.state("read"),
        failed,
        busiest_second: number.max_in_window,
        limit: u64::from(number.mps),
        v131047: sim.violation(131047),
        v130429: sim.violation(130429),
        outage_answers: sim.injected("outage"),
        tally: tally.clone(),
        took,
    })
}

impl Report {
    pub fn print(&self, ui: &Ui) {
        let row = |label: &str, value: String, note: &str| {
            ui.say(format!("{label:<38}{value:>8}  {note}").trim_end());
        };
        ui.blank();
        ui.title("Summary");
        row(
            "messages enqueued",
            n(self.enqueued),
            &format!(
                "(+{} refused at enqueue: window_closed)",
                self.tally.refused_at_enqueue
            ),
        );
        row("accepted by Meta (sent)", n(self.accepted), "");
        row("  delivered", n(self.delivered), "(status webhooks)");
        row("  read", n(self.read), "");
        row(
            "  sent as the fallback template",
            n(self.tally.fallback_sent),
            "(window closed)",
        );
        row(
            "  sent free-form",
            n(self.tally.free_form_sent),
            "(window open)",
        );
        let failed: u64 = self.failed.values().sum();
        row("failed", n(failed), "");
        for (reason, count) in &self.failed {
            row(&format!("  {reason}"), n(*count), "");
        }
        row(
            "outage: 503 answers from Meta",
            n(self.outage_answers),
            &format!(
                "({} retries; all {} messages sent)",
                n(self.tally.outage_retries),
                n(self.tally.outage_messages)
            ),
        );
        row(
            "busiest second at Meta",
            n(self.busiest_second),
            &format!("(limit {})", n(self.limit)),
        );
        row("131047 free-form outside the window", n(self.v131047), "");
        row("130429 over the rate limit", n(self.v130429), "");
        row(
            "took",
            format!("{:.1} s", self.took.as_secs_f64()),
            &format!("(the burst: {:.1} s)", self.tally.burst_seconds),
        );
    }

    /// The story's claims, checked against the simulator's own counts.
    pub fn check(&self) -> anyhow::Result<()> {
        let mut broken = Vec::new();
        if self.v131047 > 0 {
            broken.push(format!("Meta failed {} messages with 131047", self.v131047));
        }
        if self.v130429 > 0 {
            broken.push(format!("Meta answered 130429 {} times", self.v130429));
        }
        if self.busiest_second > self.limit {
            broken.push(format!(
                "{} requests reached Meta within one second (limit {})",
                self.busiest_second, self.limit
            ));
        }
        if self.tally.outage_retries == 0 {
            broken.push("the outage caused no retries".into());
        }
        let unexpected: Vec<&String> = self
            .failed
            .keys()
            .filter(|r| !r.starts_with("131026"))
            .collect();
        if !unexpected.is_empty() {
            broken.push(format!("messages failed for other reasons: {unexpected:?}"));
        }
        if broken.is_empty() {
            Ok(())
        } else {
            bail!("the demo's claims did not hold: {}", broken.join("; "))
        }
    }
}
