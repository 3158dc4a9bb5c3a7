//! When a failed attempt runs again, and how many attempts a job gets: the deployment's
//! [`RetryPolicy`] (from [`RetryArgs`], shared by both binaries) with a resource's
//! [`RetryOverrides`] applied.

use std::time::Duration;

use clap::Args;
use rand::Rng as _;
use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, parse_duration};

/// Longest backoff base or cap, in milliseconds (one day): a delay beyond it is a schedule,
/// not a retry.
const DAY_MS: u64 = 86_400_000;
/// Largest growth factor of the backoff ceiling per attempt.
const MAX_FACTOR: f64 = 10.0;
/// Most attempts a job may get.
pub const MAX_ATTEMPTS: i32 = 100;

/// Exponential backoff with full jitter: attempt `n` (1-based) waits a uniform random delay in
/// `[0, min(cap, base * factor^(n-1))]`. Full jitter spreads a fleet's retries after a shared
/// outage instead of synchronising them (AWS Architecture Blog, "Exponential Backoff And
/// Jitter"). backon's jitter adds up to one extra delay on top instead, so this is computed
/// here.
///
/// Defaults: base 2 s, factor 2, cap 5 min, 5 attempts. A job's attempts are fixed when it is
/// created (`jobs.max_attempts`), so a changed setting applies to new jobs only.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// The first retry's upper bound.
    pub base: Duration,
    /// Growth of the bound per attempt; at least 1.
    pub factor: f64,
    /// Most a retry ever waits.
    pub cap: Duration,
    /// Attempts in all, the first included.
    pub max_attempts: i32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(2),
            factor: 2.0,
            cap: Duration::from_secs(300),
            max_attempts: 5,
        }
    }
}

impl RetryPolicy {
    /// This policy with a resource's overrides applied.
    pub fn with_overrides(&self, overrides: Option<&RetryOverrides>) -> Self {
        let Some(o) = overrides else {
            return *self;
        };
        Self {
            base: o.base_ms.map_or(self.base, Duration::from_millis),
            factor: o.factor.unwrap_or(self.factor),
            cap: o.cap_ms.map_or(self.cap, Duration::from_millis),
            max_attempts: o.max_attempts.unwrap_or(self.max_attempts),
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

/// A resource's overrides of the deployment's retry policy; every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryOverrides {
    /// First backoff ceiling, in milliseconds.
    #[schema(minimum = 1, maximum = 86_400_000)]
    pub base_ms: Option<u64>,
    /// Growth of the ceiling per attempt.
    #[schema(minimum = 1, maximum = 10)]
    pub factor: Option<f64>,
    /// Largest backoff ceiling, in milliseconds.
    #[schema(minimum = 1, maximum = 86_400_000)]
    pub cap_ms: Option<u64>,
    /// Attempts before the job ends `failed`.
    #[schema(minimum = 1, maximum = 100)]
    pub max_attempts: Option<i32>,
}

impl RetryOverrides {
    /// Checks ranges (the same as the deployment settings'). The error is meant for a 422 body.
    pub fn validate(&self) -> Result<(), String> {
        if self.base_ms.is_some_and(|b| !(1..=DAY_MS).contains(&b)) {
            return Err(format!(
                "`retry_policy.base_ms` must be between 1 and {DAY_MS}"
            ));
        }
        if self.cap_ms.is_some_and(|c| !(1..=DAY_MS).contains(&c)) {
            return Err(format!(
                "`retry_policy.cap_ms` must be between 1 and {DAY_MS}"
            ));
        }
        if self
            .factor
            .is_some_and(|f| !(1.0..=MAX_FACTOR).contains(&f))
        {
            return Err("`retry_policy.factor` must be between 1 and 10".into());
        }
        if self
            .max_attempts
            .is_some_and(|m| !(1..=MAX_ATTEMPTS).contains(&m))
        {
            return Err(format!(
                "`retry_policy.max_attempts` must be between 1 and {MAX_ATTEMPTS}"
            ));
        }
        if let (Some(base), Some(cap)) = (self.base_ms, self.cap_ms)
            && cap < base
        {
            return Err(format!(
                "`retry_policy.cap_ms` ({cap}) must not be below `retry_policy.base_ms` ({base})"
            ));
        }
        Ok(())
    }

    /// These overrides laid over `current`: a field given here replaces it, a field left out
    /// keeps it (how `PATCH` changes one field of a stored policy).
    pub fn merged_over(self, current: Option<&RetryOverrides>) -> RetryOverrides {
        let current = current.cloned().unwrap_or_default();
        RetryOverrides {
            base_ms: self.base_ms.or(current.base_ms),
            factor: self.factor.or(current.factor),
            cap_ms: self.cap_ms.or(current.cap_ms),
            max_attempts: self.max_attempts.or(current.max_attempts),
        }
    }
}

/// The deployment's retry settings, one group flattened into both binaries: the API fixes a
/// new job's attempts from it, workers (which also create scheduled jobs) its backoff.
#[derive(Debug, Clone, Args)]
pub struct RetryArgs {
    /// Attempts a job gets before it ends `failed` (1–100).
    #[arg(long, env = "METASYNC_MAX_ATTEMPTS", default_value_t = 5,
          value_parser = clap::value_parser!(i32).range(1..=i64::from(MAX_ATTEMPTS)))]
    pub max_attempts: i32,

    /// First backoff ceiling after a transient failure (1ms–24h).
    #[arg(long, env = "METASYNC_RETRY_BASE", default_value = "2s", value_parser = parse_duration)]
    pub retry_base: Duration,

    /// Growth of the backoff ceiling per attempt (1–10).
    #[arg(long, env = "METASYNC_RETRY_FACTOR", default_value_t = 2.0)]
    pub retry_factor: f64,

    /// Largest backoff ceiling (1ms–24h, at least the base).
    #[arg(long, env = "METASYNC_RETRY_CAP", default_value = "5m", value_parser = parse_duration)]
    pub retry_cap: Duration,
}

impl RetryArgs {
    /// The policy these settings describe; a setting out of range stops start-up.
    pub fn policy(&self) -> Result<RetryPolicy, ConfigError> {
        let day = Duration::from_millis(DAY_MS);
        let in_range = |d: Duration| d >= Duration::from_millis(1) && d <= day;
        if !in_range(self.retry_base) {
            return Err(ConfigError::invalid(
                "METASYNC_RETRY_BASE",
                "must be between 1ms and 24h",
            ));
        }
        if !in_range(self.retry_cap) {
            return Err(ConfigError::invalid(
                "METASYNC_RETRY_CAP",
                "must be between 1ms and 24h",
            ));
        }
        if self.retry_cap < self.retry_base {
            return Err(ConfigError::invalid(
                "METASYNC_RETRY_CAP",
                "must be at least METASYNC_RETRY_BASE",
            ));
        }
        if !(1.0..=MAX_FACTOR).contains(&self.retry_factor) {
            return Err(ConfigError::invalid(
                "METASYNC_RETRY_FACTOR",
                "must be between 1 and 10",
            ));
        }
        Ok(RetryPolicy {
            base: self.retry_base,
            factor: self.retry_factor,
            cap: self.retry_cap,
            max_attempts: self.max_attempts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_factor_just_below_one_is_refused_as_sent() {
        // serde_json's `float_roundtrip`: the default parser rounded this up to 1.0, which the
        // range accepted (a fuzz finding).
        let parsed: RetryOverrides =
            serde_json::from_str(r#"{"factor": 0.9999999999999999}"#).unwrap();
        assert!(parsed.validate().is_err());
        let parsed: RetryOverrides =
            serde_json::from_str(r#"{"factor": 10.000000000000002}"#).unwrap();
        assert!(parsed.validate().is_err());
    }

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

    #[test]
    fn overrides_replace_only_what_they_name() {
        let policy = RetryPolicy::default().with_overrides(Some(&RetryOverrides {
            factor: Some(3.0),
            max_attempts: Some(2),
            ..RetryOverrides::default()
        }));
        assert_eq!(policy.factor, 3.0);
        assert_eq!(policy.max_attempts, 2);
        assert_eq!(policy.base, RetryPolicy::default().base);
    }

    #[test]
    fn a_bad_setting_stops_start_up() {
        let args = |factor: f64, base: u64, cap: u64| RetryArgs {
            max_attempts: 5,
            retry_base: Duration::from_millis(base),
            retry_factor: factor,
            retry_cap: Duration::from_millis(cap),
        };
        assert!(args(2.0, 2_000, 300_000).policy().is_ok());
        let err = args(11.0, 2_000, 300_000).policy().unwrap_err();
        assert_eq!(err.name, "METASYNC_RETRY_FACTOR");
        assert_eq!(
            args(0.5, 2_000, 300_000).policy().unwrap_err().name,
            "METASYNC_RETRY_FACTOR"
        );
        assert_eq!(
            args(2.0, 0, 300_000).policy().unwrap_err().name,
            "METASYNC_RETRY_BASE"
        );
        assert_eq!(
            args(2.0, 5_000, 1_000).policy().unwrap_err().name,
            "METASYNC_RETRY_CAP"
        );
    }
}
