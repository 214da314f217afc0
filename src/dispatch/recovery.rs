//! The dispatcher's share of the start-up scan: the store reads its records in parts on
//! several threads (see `store::scan`), and each part schedules its pending messages a few
//! hundred at a time and gathers the recent requests that the limits must remember.

use crate::model::Message;

use super::queue::Entry;
use super::{entry, Dispatcher, RecentDepartures, PUSHES_PER_LOCK};

/// What one part of the scan gathers.
pub struct RecoveredPart {
    /// Pending messages of `run_sender` not yet scheduled.
    run: Vec<Entry>,
    run_sender: String,
    recent: RecentDepartures,
    pending: u64,
}

impl RecoveredPart {
    /// A part that gathers departures over the same moments as `recent`.
    pub fn new(recent: &RecentDepartures) -> RecoveredPart {
        RecoveredPart {
            run: Vec::new(),
            run_sender: String::new(),
            recent: recent.empty_like(),
            pending: 0,
        }
    }
}

impl Dispatcher {
    /// Takes one message of the start-up scan: schedules it if pending (in runs under one
    /// lock of its sender's schedule), notes its recent requests.
    pub fn recover(&self, part: &mut RecoveredPart, m: &Message) {
        if m.state.is_pending() {
            part.pending += 1;
            if part.run_sender != m.sender {
                self.schedule_run(part);
                part.run_sender.clone_from(&m.sender);
            }
            part.run.push(entry(m));
            if part.run.len() >= PUSHES_PER_LOCK {
                self.schedule_run(part);
            }
        }
        part.recent.observe(m);
    }

    /// Ends the scan: schedules what the parts still hold and gathers their recent requests
    /// into `recent`. Answers how many messages were pending.
    pub fn recovered(&self, parts: Vec<RecoveredPart>, recent: &mut RecentDepartures) -> u64 {
        let mut pending = 0;
        for mut part in parts {
            self.schedule_run(&mut part);
            recent.merge(part.recent);
            pending += part.pending;
        }
        pending
    }

    fn schedule_run(&self, part: &mut RecoveredPart) {
        if part.run.is_empty() {
            return;
        }
        self.sender_or_held(&part.run_sender)
            .push_all(&part.run, self.shared.pair_limit());
        part.run.clear();
    }
}
