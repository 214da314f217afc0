//! The simulator's configuration: what Meta would know about the account (numbers, templates,
//! tokens, recipients) and how the simulated world behaves (webhook timing, faults).
//!
//! Every key has a default, so an empty file (or `SimConfig::default()`) is a working sandbox:
//! one number `120000000000001` at 80 MPS, token `sim-token`, app secret `sim-app-secret`.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// The access token every number accepts unless it has its own.
    pub token: String,
    /// Key of the `X-Hub-Signature-256` HMAC on every webhook.
    pub app_secret: String,
    /// The WhatsApp Business Account id: `entry[].id` of webhooks.
    pub waba_id: String,
    /// The business phone numbers that exist; others get error 100.
    pub numbers: Vec<NumberConfig>,
    /// Approved templates (name + language); others get 132001.
    pub templates: Vec<TemplateConfig>,
    /// Accept every template name, language and parameter count.
    pub accept_any_template: bool,
    /// Recipients that are not WhatsApp users: sends to them get 131026.
    pub not_on_whatsapp: Vec<String>,
    /// Dialled number → the WhatsApp user id (wa_id) Meta knows it by, for users whose wa_id
    /// is not the dialled digits (Brazil's ninth digit, Mexico's `521`). Unlisted numbers are
    /// their own wa_id.
    pub wa_ids: BTreeMap<String, String>,
    pub pair_rate: PairRateConfig,
    pub window: WindowConfig,
    pub webhook: WebhookConfig,
    pub statuses: StatusConfig,
    /// Fault injection for every number without its own `faults`.
    pub faults: FaultConfig,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            token: "sim-token".into(),
            app_secret: "sim-app-secret".into(),
            waba_id: "100000000000001".into(),
            numbers: vec![NumberConfig::new("120000000000001")],
            templates: vec![
                TemplateConfig::new("hello_world", "en_US", 0),
                TemplateConfig::new("order_update", "en_US", 1),
                TemplateConfig::new("welcome", "en_US", 1),
            ],
            accept_any_template: false,
            not_on_whatsapp: Vec::new(),
            wa_ids: BTreeMap::new(),
            pair_rate: PairRateConfig::default(),
            window: WindowConfig::default(),
            webhook: WebhookConfig::default(),
            statuses: StatusConfig::default(),
            faults: FaultConfig::default(),
        }
    }
}

/// One business phone number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumberConfig {
    pub phone_number_id: String,
    /// `metadata.display_phone_number` in webhooks; derived from the id when empty.
    #[serde(default)]
    pub display_phone_number: String,
    /// Messages per second before 130429 (Meta's default tier is 80).
    #[serde(default = "default_mps")]
    pub mps: u32,
    /// A token for this number only (waq has one token per sender); else the top-level `token`.
    #[serde(default)]
    pub token: Option<String>,
    /// Faults for this number, replacing the top-level `[faults]` as a whole.
    #[serde(default)]
    pub faults: Option<FaultConfig>,
}

fn default_mps() -> u32 {
    80
}

impl NumberConfig {
    pub fn new(phone_number_id: &str) -> Self {
        NumberConfig {
            phone_number_id: phone_number_id.to_string(),
            display_phone_number: String::new(),
            mps: default_mps(),
            token: None,
            faults: None,
        }
    }

    /// What webhooks show as the business's own number: configured (its digits alone, as
    /// Meta writes it), or `1555` plus the id's last seven digits (Meta's test numbers look
    /// like that).
    pub fn display(&self) -> String {
        if let Some(digits) = super::validate::normalize_phone(&self.display_phone_number) {
            return digits;
        }
        let digits: String = self
            .phone_number_id
            .chars()
            .filter(char::is_ascii_digit)
            .collect();
        let tail = &digits[digits.len().saturating_sub(7)..];
        format!("1555{tail:0>7}")
    }
}

/// An approved template, identified by name and language code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateConfig {
    pub name: String,
    pub language: String,
    /// How many parameters its body component takes ({{1}}, {{2}}, ...); others get 132000.
    #[serde(default)]
    pub body_params: usize,
    /// Pricing category shown in status webhooks: marketing, utility or authentication.
    #[serde(default = "default_category")]
    pub category: String,
}

/// Meta's pricing categories of a template.
const TEMPLATE_CATEGORIES: [&str; 3] = ["marketing", "utility", "authentication"];

fn default_category() -> String {
    "utility".into()
}

impl TemplateConfig {
    pub fn new(name: &str, language: &str, body_params: usize) -> Self {
        TemplateConfig {
            name: name.into(),
            language: language.into(),
            body_params,
            category: default_category(),
        }
    }
}

/// Meta's pair rate limit per (business number, recipient): one message per `period_ms`,
/// with bursts of up to `burst` that borrow from the future (GCRA).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PairRateConfig {
    pub period_ms: u64,
    pub burst: u32,
}

impl Default for PairRateConfig {
    fn default() -> Self {
        PairRateConfig {
            period_ms: 6_000,
            burst: 45,
        }
    }
}

/// The 24-hour customer-service window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WindowConfig {
    /// Fail free-form messages to recipients without an open window (131047). Off: anything goes.
    pub enforce: bool,
    /// How long a window stays open after a simulated inbound message.
    pub duration_s: u64,
    /// Recipients whose window is always open, for every number.
    pub open: Vec<String>,
    /// How a free-form message outside the window is refused.
    pub answer: WindowAnswer,
}

/// Meta reports a closed window (131047) both ways; a client must handle both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", try_from = "String")]
pub enum WindowAnswer {
    /// 200 with a wamid, then a `failed` status webhook with 131047.
    #[default]
    Webhook,
    /// 400 with code 131047 in the answer; nothing is accepted.
    Error,
}

/// Read from a string so that a wrong value is told the right ones, not serde's enum name.
impl TryFrom<String> for WindowAnswer {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        match value.as_str() {
            "webhook" => Ok(WindowAnswer::Webhook),
            "error" => Ok(WindowAnswer::Error),
            other => Err(format!(
                "must be \"webhook\" (200, then a failed status webhook) or \"error\" (400 with 131047), not {other:?}"
            )),
        }
    }
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig {
            enforce: true,
            duration_s: 24 * 3600,
            open: Vec::new(),
            answer: WindowAnswer::Webhook,
        }
    }
}

/// Where and how webhooks are delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// The callback URL; none (or empty) = no webhooks are sent.
    pub url: Option<String>,
    /// Most status objects in one POST.
    pub batch_max: usize,
    /// Statuses due within this span go out together (Meta batches too).
    pub batch_interval_ms: u64,
    /// Retries of a POST that failed (connection error, timeout, non-2xx) before it is dropped.
    pub max_retries: u32,
    /// First retry delay; doubles each retry.
    pub retry_backoff_ms: u64,
    /// How long one POST may take.
    pub timeout_ms: u64,
    /// Most POSTs in flight at once.
    pub concurrency: usize,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            url: None,
            batch_max: 100,
            batch_interval_ms: 20,
            max_retries: 5,
            retry_backoff_ms: 250,
            timeout_ms: 5_000,
            concurrency: 16,
        }
    }
}

impl WebhookConfig {
    /// The URL when webhooks are on.
    pub fn target(&self) -> Option<&str> {
        self.url.as_deref().filter(|u| !u.trim().is_empty())
    }
}

/// When the `sent` / `delivered` / `read` statuses of an accepted message arrive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StatusConfig {
    /// Delays after acceptance.
    pub sent_ms: u64,
    pub delivered_ms: u64,
    pub read_ms: u64,
    /// Uniform random extra delay `0..=jitter_ms` for each status; statuses may then arrive out
    /// of order, as they do from Meta.
    pub jitter_ms: u64,
    /// Share of messages whose `delivered` is skipped (read at once).
    pub read_without_delivered_share: f64,
    /// Share of messages whose `delivered` comes twice.
    pub duplicate_delivered_share: f64,
    /// Share of messages never read.
    pub never_read_share: f64,
}

impl Default for StatusConfig {
    fn default() -> Self {
        StatusConfig {
            sent_ms: 100,
            delivered_ms: 500,
            read_ms: 2_000,
            jitter_ms: 0,
            read_without_delivered_share: 0.0,
            duplicate_delivered_share: 0.0,
            never_read_share: 0.0,
        }
    }
}

/// Fault injection for one number. Shares are probabilities per request; the error shares
/// (`http_5xx`, `code_1`, `code_2`, `code_131000`, `timeout`, `rate_limit`) are exclusive
/// outcomes and must add up to at most 1. Spans (`*_for_ms`) start when the faults are
/// applied: at start-up, or by `POST /sim/faults`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultConfig {
    /// Every answer is delayed by `latency_ms` plus a uniform `0..=jitter_ms`.
    pub latency_ms: u64,
    pub jitter_ms: u64,
    /// Plain-text HTTP 500/502/503/504, as a load balancer would answer.
    pub http_5xx_share: f64,
    /// Meta error 1 (unknown error), HTTP 500.
    pub code_1_share: f64,
    /// Meta error 2 (service temporarily unavailable), HTTP 503.
    pub code_2_share: f64,
    /// Meta error 131000 (something went wrong), HTTP 500.
    pub code_131000_share: f64,
    /// The request is held without an answer for `timeout_hold_ms` (then 504).
    pub timeout_share: f64,
    pub timeout_hold_ms: u64,
    /// 130429 regardless of the number's real rate.
    pub rate_limit_share: f64,
    /// Every request gets 130429 for this long.
    pub rate_limit_for_ms: u64,
    /// Every request gets HTTP 503 for this long.
    pub outage_for_ms: u64,
    /// The next this many requests (with a valid token) get a plain HTTP 500, then no more:
    /// a deterministic "fail twice, then succeed".
    pub fail_next_requests: u64,
    /// The token expires (error 190) after this many requests made with it ...
    pub token_expire_after_requests: Option<u64>,
    /// ... or this long after it was set.
    pub token_expire_after_ms: Option<u64>,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            latency_ms: 0,
            jitter_ms: 0,
            http_5xx_share: 0.0,
            code_1_share: 0.0,
            code_2_share: 0.0,
            code_131000_share: 0.0,
            timeout_share: 0.0,
            // Longer than any sensible client timeout.
            timeout_hold_ms: 60_000,
            rate_limit_share: 0.0,
            rate_limit_for_ms: 0,
            outage_for_ms: 0,
            fail_next_requests: 0,
            token_expire_after_requests: None,
            token_expire_after_ms: None,
        }
    }
}

impl FaultConfig {
    fn check(&self, key: &str) -> anyhow::Result<()> {
        let shares = [
            ("http_5xx_share", self.http_5xx_share),
            ("code_1_share", self.code_1_share),
            ("code_2_share", self.code_2_share),
            ("code_131000_share", self.code_131000_share),
            ("timeout_share", self.timeout_share),
            ("rate_limit_share", self.rate_limit_share),
        ];
        for (name, share) in shares {
            check_share(&format!("{key}.{name}"), share)?;
        }
        for (name, ms) in [
            ("latency_ms", self.latency_ms),
            ("jitter_ms", self.jitter_ms),
            ("timeout_hold_ms", self.timeout_hold_ms),
            ("rate_limit_for_ms", self.rate_limit_for_ms),
            ("outage_for_ms", self.outage_for_ms),
            (
                "token_expire_after_ms",
                self.token_expire_after_ms.unwrap_or(0),
            ),
        ] {
            check_ms(&format!("{key}.{name}"), ms)?;
        }
        let total: f64 = shares.iter().map(|(_, s)| s).sum();
        if total > 1.0 + 1e-9 {
            bail!("{key}: the error shares add up to {total}, more than 1");
        }
        Ok(())
    }

    /// Validates faults given at run time (`POST /sim/faults`).
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        self.check("faults")
    }
}

/// Longest time any setting may span: keeps every deadline computation far from overflow.
const MAX_MS: u64 = 365 * 24 * 3600 * 1000;

fn check_ms(key: &str, ms: u64) -> anyhow::Result<()> {
    if ms > MAX_MS {
        bail!("{key} must be at most {MAX_MS} (one year), got {ms}");
    }
    Ok(())
}

fn check_share(key: &str, share: f64) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&share) {
        bail!("{key} must be between 0 and 1, got {share}");
    }
    Ok(())
}

impl SimConfig {
    /// Rejects configurations the simulator cannot honour, naming the key.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.numbers.is_empty() {
            bail!("numbers: configure at least one number");
        }
        // An empty token (`WAQ_SIM__TOKEN=`) would accept requests that carry none.
        if self.token.trim().is_empty() {
            bail!("token must not be empty: set it (or WAQ_SIM__TOKEN) to the token waq sends");
        }
        if self.app_secret.trim().is_empty() {
            bail!("app_secret must not be empty: set it (or WAQ_SIM__APP_SECRET) to the app secret waq checks");
        }
        let mut seen = HashSet::new();
        for (i, n) in self.numbers.iter().enumerate() {
            if n.phone_number_id.is_empty() {
                bail!("numbers[{i}].phone_number_id must not be empty");
            }
            if !seen.insert(n.phone_number_id.as_str()) {
                bail!(
                    "numbers[{i}].phone_number_id: {} is configured twice",
                    n.phone_number_id
                );
            }
            if n.mps == 0 {
                bail!("numbers[{i}].mps must be at least 1");
            }
            if n.token.as_ref().is_some_and(|t| t.trim().is_empty()) {
                bail!("numbers[{i}].token must not be empty: leave it out to use `token`");
            }
            if !n.display_phone_number.is_empty()
                && super::validate::normalize_phone(&n.display_phone_number).is_none()
            {
                bail!(
                    "numbers[{i}].display_phone_number: {:?} is not a phone number (7-15 digits)",
                    n.display_phone_number
                );
            }
            if let Some(f) = &n.faults {
                f.check(&format!("numbers[{i}].faults"))?;
            }
        }
        for (i, t) in self.templates.iter().enumerate() {
            if t.name.is_empty() || t.language.is_empty() {
                bail!("templates[{i}]: name and language are required");
            }
            if !TEMPLATE_CATEGORIES.contains(&t.category.as_str()) {
                bail!(
                    "templates[{i}].category: {:?} is not a category; use {}",
                    t.category,
                    TEMPLATE_CATEGORIES.join(", ")
                );
            }
        }
        // A recipient that is no phone number would never match a send: a typo, not a rule.
        for (key, list) in [
            ("not_on_whatsapp", &self.not_on_whatsapp),
            ("window.open", &self.window.open),
        ] {
            for (i, number) in list.iter().enumerate() {
                if super::validate::normalize_phone(number).is_none() {
                    bail!("{key}[{i}]: {number:?} is not a phone number (7-15 digits)");
                }
            }
        }
        for (dialled, wa_id) in &self.wa_ids {
            for number in [dialled, wa_id] {
                if super::validate::normalize_phone(number).is_none() {
                    bail!("wa_ids.{dialled:?}: {number:?} is not a phone number (7-15 digits)");
                }
            }
        }
        if self.pair_rate.burst == 0 || self.pair_rate.period_ms == 0 {
            bail!("pair_rate: burst and period_ms must be at least 1");
        }
        if let Some(url) = self.webhook.target() {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                bail!("webhook.url must be an http:// or https:// URL, got {url:?}");
            }
        }
        if self.webhook.batch_max == 0 || self.webhook.concurrency == 0 {
            bail!("webhook: batch_max and concurrency must be at least 1");
        }
        if self.webhook.timeout_ms == 0 {
            bail!("webhook.timeout_ms must be at least 1");
        }
        let w = &self.webhook;
        let st = &self.statuses;
        for (key, ms) in [
            ("pair_rate.period_ms", self.pair_rate.period_ms),
            (
                "window.duration_s",
                self.window.duration_s.saturating_mul(1000),
            ),
            ("webhook.batch_interval_ms", w.batch_interval_ms),
            ("webhook.retry_backoff_ms", w.retry_backoff_ms),
            ("webhook.timeout_ms", w.timeout_ms),
            ("statuses.sent_ms", st.sent_ms),
            ("statuses.delivered_ms", st.delivered_ms),
            ("statuses.read_ms", st.read_ms),
            ("statuses.jitter_ms", st.jitter_ms),
        ] {
            check_ms(key, ms)?;
        }
        check_share(
            "statuses.read_without_delivered_share",
            self.statuses.read_without_delivered_share,
        )?;
        check_share(
            "statuses.duplicate_delivered_share",
            self.statuses.duplicate_delivered_share,
        )?;
        check_share("statuses.never_read_share", self.statuses.never_read_share)?;
        self.faults.check("faults")?;
        Ok(())
    }
}

/// Reads a TOML file; `WAQ_SIM__KEY` / `WAQ_SIM__SECTION__KEY` environment variables override it
/// (handy for the token and app secret).
pub fn load_config(path: &Path) -> anyhow::Result<SimConfig> {
    load(Some(path))
}

/// The configuration of `waq sim`: the file if there is one, else the defaults, and the
/// `WAQ_SIM__...` environment variables over either.
pub fn load(path: Option<&Path>) -> anyhow::Result<SimConfig> {
    let what = match path {
        Some(p) => format!("simulator config {}", p.display()),
        None => "simulator defaults with WAQ_SIM__ variables".to_string(),
    };
    let mut builder = config::Config::builder();
    if let Some(path) = path {
        builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
    }
    let built = builder
        .add_source(
            config::Environment::with_prefix("WAQ_SIM")
                .separator("__")
                .try_parsing(true),
        )
        .build()
        .with_context(|| format!("reading {what}"))?;
    // The daemon's mapping names the key as written (`numbers[0].mps`, not `numbers[0]mps`).
    let cfg: SimConfig = built
        .try_deserialize()
        .map_err(|e| crate::config::from_crate(e, &what))
        .with_context(|| format!("invalid {what}"))?;
    cfg.check().with_context(|| format!("invalid {what}"))?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_useful() {
        let cfg = SimConfig::default();
        cfg.check().unwrap();
        assert_eq!(cfg.numbers[0].phone_number_id, "120000000000001");
        assert_eq!(cfg.numbers[0].mps, 80);
        assert_eq!(cfg.numbers[0].display(), "15550000001");
        assert!(cfg.webhook.target().is_none());
    }

    #[test]
    fn shares_over_one_are_rejected() {
        let mut cfg = SimConfig::default();
        cfg.faults.code_1_share = 0.6;
        cfg.faults.code_2_share = 0.6;
        let err = cfg.check().unwrap_err().to_string();
        assert!(err.contains("faults"), "{err}");
    }

    #[test]
    fn recipient_lists_must_be_phone_numbers() {
        let mut cfg = SimConfig {
            not_on_whatsapp: vec!["+1 415 555 0199".into()],
            ..SimConfig::default()
        };
        cfg.window.open = vec!["14155550108".into()];
        cfg.check().unwrap();
        cfg.not_on_whatsapp.push("abc".into());
        let err = cfg.check().unwrap_err().to_string();
        assert!(
            err.contains("not_on_whatsapp[1]") && err.contains("\"abc\""),
            "{err}"
        );
        cfg.not_on_whatsapp.pop();
        cfg.window.open.push("12".into());
        let err = cfg.check().unwrap_err().to_string();
        assert!(err.contains("window.open[1]"), "{err}");
    }

    #[test]
    fn template_categories_are_metas() {
        let mut cfg = SimConfig::default();
        for category in ["marketing", "utility", "authentication"] {
            cfg.templates[1].category = category.into();
            cfg.check().unwrap();
        }
        cfg.templates[1].category = "xyz".into();
        let err = cfg.check().unwrap_err().to_string();
        assert!(
            err.contains("templates[1].category") && err.contains("\"xyz\""),
            "{err}"
        );
    }

    #[test]
    fn wa_ids_must_be_phone_numbers() {
        let mut cfg = SimConfig::default();
        cfg.wa_ids
            .insert("+55 11 98765-4321".into(), "551187654321".into());
        cfg.check().unwrap();
        cfg.wa_ids.insert("5511987654322".into(), "abc".into());
        let err = cfg.check().unwrap_err().to_string();
        assert!(err.contains("wa_ids"), "{err}");
    }

    #[test]
    fn absurd_times_are_rejected() {
        let mut cfg = SimConfig::default();
        cfg.statuses.read_ms = u64::MAX;
        let err = cfg.check().unwrap_err().to_string();
        assert!(err.contains("statuses.read_ms"), "{err}");
        let mut cfg = SimConfig::default();
        cfg.window.duration_s = u64::MAX;
        assert!(cfg.check().is_err());
    }
}
