//! Retry delays: exponential backoff with jitter between a minimal and a maximal delay (the
//! n-th retry: uniform from `min` to `min · 2^(n−1)`, capped at `max`).

use std::time::Duration;

/// Delay before attempt `attempts + 1`, drawn uniformly from [min, min(max, min·2^(attempts-1))].
pub fn delay(attempts: u32, min: Duration, max: Duration) -> Duration {
    let exp = attempts.saturating_sub(1).min(30);
    let cap = min.saturating_mul(1u32 << exp).min(max);
    let min_ms = min.as_millis() as u64;
    let cap_ms = (cap.as_millis() as u64).max(min_ms);
    Duration::from_millis(fastrand::u64(min_ms..=cap_ms))
}

/// Meta's advice for 131056 (pair rate limit): wait 4^X seconds, X = 0, 1, 2, …
pub fn pair_backoff(strikes: u32) -> Duration {
    Duration::from_secs(4u64.saturating_pow(strikes.min(6)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_bounds_and_growing() {
        let min = Duration::from_millis(100);
        let max = Duration::from_secs(5);
        for attempts in 1..40 {
            let d = delay(attempts, min, max);
            assert!(d >= min && d <= max, "{attempts}: {d:?}");
        }
        assert_eq!(delay(1, min, max), min);
        assert_eq!(pair_backoff(0), Duration::from_secs(1));
        assert_eq!(pair_backoff(2), Duration::from_secs(16));
    }
}
