//! Fault injection for one number (latency, errors, timeouts, rate-limit bursts, outages)
//! and its access token, which can be made to expire.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use subtle::ConstantTimeEq;

use super::config::FaultConfig;

/// A fault chosen for one request. `kind()` names it in the stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Injected {
    /// Every request answered 503 while an outage lasts.
    Outage,
    /// Hold the request without an answer, then 504.
    Timeout(Duration),
    /// A plain-text 5xx from "a load balancer".
    Http5xx(StatusCode),
    Code1,
    Code2,
    Code131000,
    /// 130429 without the number being over its rate.
    RateLimit,
    /// The token has expired: 190.
    TokenExpired,
}

impl Injected {
    pub fn kind(self) -> &'static str {
        match self {
            Injected::Outage => "outage",
            Injected::Timeout(_) => "timeout",
            Injected::Http5xx(_) => "http_5xx",
            Injected::Code1 => "code_1",
            Injected::Code2 => "code_2",
            Injected::Code131000 => "code_131000",
            Injected::RateLimit => "rate_limit",
            Injected::TokenExpired => "token_expired",
        }
    }
}

/// The faults in force for a number, and since when (spans count from then).
#[derive(Debug, Clone)]
pub(crate) struct Faults {
    cfg: FaultConfig,
    applied_at: Instant,
    /// Requests still to fail from `fail_next_requests`.
    fail_left: u64,
}

const GATEWAY_ERRORS: [StatusCode; 4] = [
    StatusCode::INTERNAL_SERVER_ERROR,
    StatusCode::BAD_GATEWAY,
    StatusCode::SERVICE_UNAVAILABLE,
    StatusCode::GATEWAY_TIMEOUT,
];

impl Faults {
    pub fn new(cfg: FaultConfig, now: Instant) -> Self {
        Faults {
            fail_left: cfg.fail_next_requests,
            cfg,
            applied_at: now,
        }
    }

    pub fn config(&self) -> &FaultConfig {
        &self.cfg
    }

    fn within(&self, span_ms: u64, now: Instant) -> bool {
        span_ms > 0
            && now.saturating_duration_since(self.applied_at) < Duration::from_millis(span_ms)
    }

    /// An outage answers everything, before the token is even looked at.
    pub fn outage(&self, now: Instant) -> Option<Injected> {
        self.within(self.cfg.outage_for_ms, now)
            .then_some(Injected::Outage)
    }

    /// Draws this request's injected error, if any: the requests still to fail first, then the
    /// rate-limit span, then one uniform draw against the (exclusive) shares.
    pub fn draw(&mut self, now: Instant) -> Option<Injected> {
        if self.fail_left > 0 {
            self.fail_left -= 1;
            return Some(Injected::Http5xx(StatusCode::INTERNAL_SERVER_ERROR));
        }
        if self.within(self.cfg.rate_limit_for_ms, now) {
            return Some(Injected::RateLimit);
        }
        let c = &self.cfg;
        let shares = [
            (
                c.timeout_share,
                Injected::Timeout(Duration::from_millis(c.timeout_hold_ms)),
            ),
            (
                c.http_5xx_share,
                Injected::Http5xx(GATEWAY_ERRORS[fastrand::usize(..GATEWAY_ERRORS.len())]),
            ),
            (c.code_1_share, Injected::Code1),
            (c.code_2_share, Injected::Code2),
            (c.code_131000_share, Injected::Code131000),
            (c.rate_limit_share, Injected::RateLimit),
        ];
        if shares.iter().all(|(s, _)| *s <= 0.0) {
            return None;
        }
        let mut x = fastrand::f64();
        for (share, fault) in shares {
            if x < share {
                return Some(fault);
            }
            x -= share;
        }
        None
    }

    /// This request's answer delay.
    pub fn latency(&self) -> Duration {
        let jitter = if self.cfg.jitter_ms > 0 {
            fastrand::u64(0..=self.cfg.jitter_ms)
        } else {
            0
        };
        Duration::from_millis(self.cfg.latency_ms + jitter)
    }
}

/// The outcome of a token check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenCheck {
    Valid,
    Missing,
    Wrong,
    Expired,
}

/// The access token a number accepts, and when it stops being accepted.
#[derive(Debug, Clone)]
pub(crate) struct Token {
    value: String,
    since: Instant,
    /// Successful uses since `since`.
    uses: u64,
    expire_after_requests: Option<u64>,
    expire_after: Option<Duration>,
}

impl Token {
    pub fn new(value: String, now: Instant) -> Self {
        Token {
            value,
            since: now,
            uses: 0,
            expire_after_requests: None,
            expire_after: None,
        }
    }

    /// Sets when the current token expires, counting from now.
    pub fn set_expiry(&mut self, after_requests: Option<u64>, after_ms: Option<u64>, now: Instant) {
        self.since = now;
        self.uses = 0;
        self.expire_after_requests = after_requests;
        self.expire_after = after_ms.map(Duration::from_millis);
    }

    /// A new token, valid from now.
    pub fn replace(&mut self, value: String, now: Instant) {
        *self = Token::new(value, now);
    }

    /// Checks the `Authorization` header's bearer token; a valid check counts as a use.
    pub fn check(&mut self, presented: Option<&str>, now: Instant) -> TokenCheck {
        let Some(presented) = presented else {
            return TokenCheck::Missing;
        };
        if !bool::from(presented.as_bytes().ct_eq(self.value.as_bytes())) {
            return TokenCheck::Wrong;
        }
        let by_count = self.expire_after_requests.is_some_and(|n| self.uses >= n);
        let by_time = self
            .expire_after
            .is_some_and(|d| now.saturating_duration_since(self.since) >= d);
        if by_count || by_time {
            return TokenCheck::Expired;
        }
        self.uses += 1;
        TokenCheck::Valid
    }

    /// Whether `presented` is this token (for requests to unknown numbers).
    pub fn matches(&self, presented: Option<&str>) -> bool {
        presented.is_some_and(|p| bool::from(p.as_bytes().ct_eq(self.value.as_bytes())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_expires_after_n_requests() {
        let now = Instant::now();
        let mut t = Token::new("t".into(), now);
        t.set_expiry(Some(2), None, now);
        assert_eq!(t.check(Some("t"), now), TokenCheck::Valid);
        assert_eq!(t.check(Some("x"), now), TokenCheck::Wrong);
        assert_eq!(t.check(None, now), TokenCheck::Missing);
        assert_eq!(t.check(Some("t"), now), TokenCheck::Valid);
        assert_eq!(t.check(Some("t"), now), TokenCheck::Expired);
        t.replace("u".into(), now);
        assert_eq!(t.check(Some("u"), now), TokenCheck::Valid);
    }

    #[test]
    fn token_expires_after_time() {
        let now = Instant::now();
        let mut t = Token::new("t".into(), now);
        t.set_expiry(None, Some(100), now);
        assert_eq!(t.check(Some("t"), now), TokenCheck::Valid);
        assert_eq!(
            t.check(Some("t"), now + Duration::from_millis(100)),
            TokenCheck::Expired
        );
    }

    #[test]
    fn full_share_always_fires() {
        let now = Instant::now();
        let mut f = Faults::new(
            FaultConfig {
                code_2_share: 1.0,
                ..FaultConfig::default()
            },
            now,
        );
        for _ in 0..100 {
            assert_eq!(f.draw(now), Some(Injected::Code2));
        }
        let mut quiet = Faults::new(FaultConfig::default(), now);
        assert_eq!(quiet.draw(now), None);
        assert_eq!(quiet.outage(now), None);
    }

    #[test]
    fn the_next_n_requests_fail_then_none() {
        let now = Instant::now();
        let mut f = Faults::new(
            FaultConfig {
                fail_next_requests: 2,
                ..FaultConfig::default()
            },
            now,
        );
        let fault = Some(Injected::Http5xx(StatusCode::INTERNAL_SERVER_ERROR));
        assert_eq!(f.draw(now), fault);
        assert_eq!(f.draw(now), fault);
        assert_eq!(f.draw(now), None);
    }

    #[test]
    fn spans_end() {
        let now = Instant::now();
        let f = Faults::new(
            FaultConfig {
                outage_for_ms: 50,
                ..FaultConfig::default()
            },
            now,
        );
        assert_eq!(f.outage(now), Some(Injected::Outage));
        assert_eq!(f.outage(now + Duration::from_millis(50)), None);
    }
}
