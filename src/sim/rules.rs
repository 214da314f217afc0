//! Meta's stateful rules besides rates: approved templates, the 24-hour customer-service
//! window, and (the simulator's own check) per-recipient ordering.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use super::config::TemplateConfig;
use super::error::MetaError;
use super::validate::TemplateRef;

/// Approved templates by name, then language.
#[derive(Debug)]
pub(crate) struct Templates {
    accept_any: bool,
    by_name: HashMap<String, HashMap<String, Approved>>,
}

#[derive(Debug)]
struct Approved {
    body_params: usize,
    category: Arc<str>,
}

impl Templates {
    pub fn new(list: &[TemplateConfig], accept_any: bool) -> Self {
        let mut by_name: HashMap<String, HashMap<String, Approved>> = HashMap::new();
        for t in list {
            by_name.entry(t.name.clone()).or_default().insert(
                t.language.clone(),
                Approved {
                    body_params: t.body_params,
                    category: Arc::from(t.category.as_str()),
                },
            );
        }
        Templates {
            accept_any,
            by_name,
        }
    }

    /// 132001 for an unknown name or language, 132000 for a wrong body parameter count;
    /// else the template's pricing category.
    pub fn check(&self, t: &TemplateRef) -> Result<Arc<str>, MetaError> {
        if self.accept_any {
            return Ok(Arc::from("utility"));
        }
        let approved = self
            .by_name
            .get(&t.name)
            .and_then(|langs| langs.get(&t.language))
            .ok_or_else(|| MetaError::template_missing(&t.name, &t.language))?;
        if approved.body_params != t.body_params {
            return Err(MetaError::template_params(
                t.body_params,
                approved.body_params,
            ));
        }
        Ok(approved.category.clone())
    }
}

/// Customer-service windows opened by simulated inbound messages, for one number.
#[derive(Debug, Default)]
pub(crate) struct ServiceWindows {
    open_until: HashMap<String, Instant>,
    prune_at: usize,
}

const PRUNE_MIN: usize = 4096;

impl ServiceWindows {
    /// Opens (or extends) the window of `recipient` until `until`.
    pub fn open(&mut self, recipient: &str, until: Instant, now: Instant) {
        self.open_until.insert(recipient.to_string(), until);
        if self.open_until.len() >= self.prune_at.max(PRUNE_MIN) {
            // Expired windows are the same as absent ones; dropping them bounds memory.
            self.open_until.retain(|_, t| *t > now);
            self.prune_at = self.open_until.len() * 2;
        }
    }

    pub fn is_open(&self, recipient: &str, now: Instant) -> bool {
        self.open_until.get(recipient).is_some_and(|t| *t > now)
    }

    pub fn clear(&mut self) {
        self.open_until.clear();
    }
}

/// Highest `seq:<n>` seen per recipient in `biz_opaque_callback_data` of accepted messages.
#[derive(Debug, Default)]
pub(crate) struct OrderingTracker {
    highest: HashMap<String, u64>,
}

impl OrderingTracker {
    /// Records an accepted message; true when it arrived after one with a higher sequence number.
    pub fn observe(&mut self, recipient: &str, callback_data: Option<&str>) -> bool {
        let Some(seq) = callback_data
            .and_then(|d| d.strip_prefix("seq:"))
            .and_then(|n| n.trim().parse::<u64>().ok())
        else {
            return false;
        };
        match self.highest.get_mut(recipient) {
            Some(high) if seq < *high => true,
            Some(high) => {
                *high = seq;
                false
            }
            None => {
                self.highest.insert(recipient.to_string(), seq);
                false
            }
        }
    }

    pub fn clear(&mut self) {
        self.highest.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn tref(name: &str, lang: &str, n: usize) -> TemplateRef {
        TemplateRef {
            name: name.into(),
            language: lang.into(),
            body_params: n,
        }
    }

    #[test]
    fn templates_by_name_language_and_params() {
        let t = Templates::new(&[TemplateConfig::new("order_update", "en_US", 1)], false);
        assert!(t.check(&tref("order_update", "en_US", 1)).is_ok());
        assert_eq!(
            t.check(&tref("order_update", "de", 1)).unwrap_err().code,
            132001
        );
        assert_eq!(t.check(&tref("nope", "en_US", 1)).unwrap_err().code, 132001);
        assert_eq!(
            t.check(&tref("order_update", "en_US", 2)).unwrap_err().code,
            132000
        );
        let any = Templates::new(&[], true);
        assert!(any.check(&tref("whatever", "xx", 9)).is_ok());
    }

    #[test]
    fn ordering_flags_a_lower_sequence() {
        let mut o = OrderingTracker::default();
        assert!(!o.observe("a", Some("seq:1")));
        assert!(!o.observe("a", Some("seq:3")));
        assert!(
            !o.observe("a", Some("seq:3")),
            "a resend of the same is not out of order"
        );
        assert!(o.observe("a", Some("seq:2")));
        assert!(!o.observe("b", Some("seq:1")), "per recipient");
        assert!(!o.observe("a", Some("other")));
        assert!(!o.observe("a", None));
    }

    #[test]
    fn windows_expire() {
        let now = Instant::now();
        let mut w = ServiceWindows::default();
        assert!(!w.is_open("a", now));
        w.open("a", now + Duration::from_secs(10), now);
        assert!(w.is_open("a", now));
        assert!(!w.is_open("a", now + Duration::from_secs(10)));
    }
}
