//! Whether a sender's requests reach a Graph API that serves. A wrong `api.base_url`, a proxy
//! or firewall in the way, or Meta down: every request fails without an answer, or with an
//! outage answer (503, code 2, 131016, a gateway's 500/502/504 without a Meta error object, a
//! 5xx with code 1 or 131000: `CloudError::is_outage_answer`), and each message is retried
//! with backoff, so nothing is lost, but nothing is sent either. Such failures in a row make a
//! run; any other answer ends it.
//!
//! - From the [`UNREACHABLE_AFTER`]th failure of a run on, whatever time the run spans, an
//!   outage answer ends no message by `dispatch.max_attempts` ([`Reach::outage_with_one_more`]):
//!   with small retry settings a message would otherwise use up its attempts before the run
//!   had lasted long enough to show, and other messages' successes end the run, so one
//!   message's own 5xx among them still counts.
//! - Once the run also spans [`UNREACHABLE_FOR_MS`], the sender counts as unreachable:
//!   `GET /v1/health` says `degraded` and names it, and the log says so (again every minute
//!   while it lasts). Timeouts come in bunches when Meta is slow (the requests of one busy
//!   moment time out together), so a count alone would call a sender unreachable for a moment
//!   while most of its requests are answered.

/// Requests in a row that found the Graph API unavailable before the sender counts as
/// unreachable, or an outage answer uses up no attempt: one may be a connection the far end
/// closed while idle, or one message's own 5xx.
pub const UNREACHABLE_AFTER: u32 = 3;

/// How long the failures in a row must have lasted (from the first to the latest).
pub const UNREACHABLE_FOR_MS: u64 = 10_000;

/// How often the log repeats that a sender is still unreachable.
const WARN_EVERY_MS: u64 = 60_000;

/// How long the latest failure says anything: a sender with no request since (its messages
/// ended, or none came) is not called unreachable for an outage long over, nor does a new
/// failure join that old run.
pub const STALE_AFTER_MS: u64 = 15 * 60_000;

#[derive(Debug, Default)]
pub struct Reach {
    /// Requests in a row that found the Graph API unavailable.
    failures: u32,
    /// When the first of them failed (Unix ms).
    since_ms: u64,
    last_error: String,
    /// When the latest failure came (Unix ms).
    latest_ms: u64,
    warned_at_ms: Option<u64>,
}

/// A sender that has not reached the Graph API lately.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Unreachable {
    /// When the first failure in a row came (RFC 3339 in JSON).
    #[serde(rename = "since", serialize_with = "as_time")]
    pub since_ms: u64,
    pub failures: u32,
    pub last_error: String,
}

fn as_time<S: serde::Serializer>(ms: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::model::format_time(*ms))
}

impl Reach {
    /// A request found the Graph API unavailable at `now_ms`. True when a warning is due.
    pub fn failed(&mut self, now_ms: u64, error: &str) -> bool {
        if self.failures > 0 && now_ms.saturating_sub(self.latest_ms) >= STALE_AFTER_MS {
            self.failures = 0;
        }
        if self.failures == 0 {
            self.since_ms = now_ms;
        }
        self.failures += 1;
        self.latest_ms = self.latest_ms.max(now_ms);
        error.clone_into(&mut self.last_error);
        if !self.is_unreachable(now_ms) {
            return false;
        }
        let due = self
            .warned_at_ms
            .is_none_or(|at| now_ms.saturating_sub(at) >= WARN_EVERY_MS);
        if due {
            self.warned_at_ms = Some(now_ms);
        }
        due
    }

    /// A request got an answer other than the Graph API's being unavailable. `Some(n)` when
    /// that ends `n` failures in a row that had made the sender unreachable.
    pub fn answered(&mut self, now_ms: u64) -> Option<u32> {
        let was = self.is_unreachable(now_ms).then_some(self.failures);
        self.failures = 0;
        // `warned_at_ms` stays: a sender that comes and goes is still warned of once a minute.
        was
    }

    /// Whether a failure for want of the Graph API at `now_ms`, not yet recorded, would make
    /// the run [`UNREACHABLE_AFTER`] or more long.
    pub fn outage_with_one_more(&self, now_ms: u64) -> bool {
        let run = match now_ms.saturating_sub(self.latest_ms) < STALE_AFTER_MS {
            true => self.failures,
            false => 0,
        };
        run + 1 >= UNREACHABLE_AFTER
    }

    fn is_unreachable(&self, now_ms: u64) -> bool {
        self.failures >= UNREACHABLE_AFTER
            && self.latest_ms.saturating_sub(self.since_ms) >= UNREACHABLE_FOR_MS
            && now_ms.saturating_sub(self.latest_ms) < STALE_AFTER_MS
    }

    pub fn unreachable(&self, now_ms: u64) -> Option<Unreachable> {
        self.is_unreachable(now_ms).then(|| Unreachable {
            since_ms: self.since_ms,
            failures: self.failures,
            last_error: self.last_error.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_after_failures_in_a_row_for_a_while_until_any_answer() {
        let mut r = Reach::default();
        assert!(!r.failed(1_000, "refused"));
        assert!(
            r.answered(1_500).is_none(),
            "one failure is not unreachable"
        );
        // A bunch of timeouts at once is not enough, however many.
        for at in [2_000, 2_001, 2_002, 2_003, 2_004] {
            assert!(!r.failed(at, "timed out"));
        }
        assert!(r.unreachable(2_004).is_none());
        assert!(r.answered(2_500).is_none());
        // Failures in a row over 10 s are.
        assert!(!r.failed(20_000, "refused"));
        assert!(!r.failed(25_000, "refused"));
        assert!(r.failed(30_000, "reset"), "warned once it is unreachable");
        assert_eq!(
            r.unreachable(30_000),
            Some(Unreachable {
                since_ms: 20_000,
                failures: 3,
                last_error: "reset".into()
            })
        );
        assert!(!r.failed(60_000, "reset"), "not again within a minute");
        assert!(r.failed(90_000, "reset"), "again a minute on");
        assert_eq!(r.answered(90_500), Some(5));
        assert!(r.unreachable(90_500).is_none());
        // Back again soon after: unreachable, but no second warning within the minute.
        for at in [100_000, 105_000] {
            assert!(!r.failed(at, "refused"));
        }
        assert!(!r.failed(111_000, "refused"));
        assert!(r.unreachable(111_000).is_some());
    }

    /// An outage answer uses up no attempt from the third failure of a run, however quickly
    /// the run came; another answer ends the run.
    #[test]
    fn an_outage_needs_a_run_of_three_not_ten_seconds() {
        let mut r = Reach::default();
        assert!(!r.outage_with_one_more(1_000));
        r.failed(1_000, "502");
        assert!(!r.outage_with_one_more(1_010));
        r.failed(1_010, "502");
        assert!(r.outage_with_one_more(1_020), "the third in a row");
        r.failed(1_020, "502");
        assert!(
            r.unreachable(1_020).is_none(),
            "not unreachable before 10 s"
        );
        assert!(r.outage_with_one_more(1_030));
        r.answered(1_040);
        assert!(!r.outage_with_one_more(1_050), "a success ended the run");
        r.failed(1_050, "500");
        r.failed(1_060, "500");
        assert!(
            !r.outage_with_one_more(1_060 + STALE_AFTER_MS),
            "a stale run is over"
        );
    }

    /// With no request for a long while (the messages ended, none came), an outage is not
    /// reported on, and a new failure starts a new run rather than joining the old one.
    #[test]
    fn an_old_run_of_failures_goes_stale() {
        let mut r = Reach::default();
        for at in [0, 5_000, 10_000] {
            r.failed(at, "503");
        }
        assert!(r.unreachable(10_000).is_some());
        let later = 10_000 + STALE_AFTER_MS;
        assert!(r.unreachable(later).is_none());
        assert!(!r.failed(later, "503"), "one failure of a new run");
        assert!(r.unreachable(later).is_none());
        assert!(r.answered(later).is_none());
    }
}
