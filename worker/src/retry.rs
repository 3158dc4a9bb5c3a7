//! When a failed attempt runs again.

use std::time::Duration;

use metasync_shared::domain::RetryOverrides;
use rand::Rng as _;

/// Exponential backoff with full jitter: attempt `n` (1-based) waits a uniform random delay in
/// `[0, min(cap, base * factor^(n-1))]`. Full jitter spreads a fleet's retries after a shared
/// outage instead of synchronising them (AWS Architecture Blog, "Exponential Backoff And
/// Jitter"). backon's jitter adds up to one extra delay on top instead, so this is computed
/// here.
///
/// Defaults: base 2 s, factor 2, cap 5 min; the number of attempts lives on the job
/// (`max_attempts`, default 5).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    pub base: Duration,
    pub factor: f64,
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(2),
            factor: 2.0,
            cap: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// This policy with a resource's overrides applied.
    pub fn with_overrides(&self, overrides: Option<&serde_json::Value>) -> Self {
        let Some(o) =
            overrides.and_then(|v| serde_json::from_value::<RetryOverrides>(v.clone()).ok())
        else {
            return *self;
        };
        Self {
            base: o.base_ms.map_or(self.base, Duration::from_millis),
            factor: o.factor.unwrap_or(self.factor),
            cap: o.cap_ms.map_or(self.cap, Duration::from_millis),
        }
    }

    /// The ceiling of the delay after attempt `attempt` failed.
    pub fn ceiling(&self, attempt: i32) -> Duration {
        let exponent = attempt.saturating_sub(1).clamp(0, 62);
        let scaled = self.base.as_secs_f64() * self.factor.powi(exponent);
        Duration::from_secs_f64(scaled.min(self.cap.as_secs_f64()))
    }

    /// A random delay in `[0, ceiling(attempt)]`.
    pub fn delay(&self, attempt: i32) -> Duration {
        let ceiling = self.ceiling(attempt);
        if ceiling.is_zero() {
            return ceiling;
        }
        Duration::from_secs_f64(rand::rng().random_range(0.0..=ceiling.as_secs_f64()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_grow_then_cap() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.ceiling(1), Duration::from_secs(2));
        assert_eq!(policy.ceiling(2), Duration::from_secs(4));
        assert_eq!(policy.ceiling(5), Duration::from_secs(32));
        assert_eq!(policy.ceiling(20), Duration::from_secs(300));
        assert_eq!(policy.ceiling(10_000), Duration::from_secs(300));
    }

    #[test]
    fn delays_stay_within_the_ceiling() {
        let policy = RetryPolicy::default();
        for attempt in 1..10 {
            for _ in 0..100 {
                assert!(policy.delay(attempt) <= policy.ceiling(attempt));
            }
        }
    }
}
