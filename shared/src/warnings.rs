//! [`Warnings`]: a warning that repeats while something stays broken (a database or Redis
//! outage), logged at most once per [`WARN_EVERY`] with the count of failures in between, so
//! an outage does not flood the logs.

use std::fmt::Display;
use std::time::{Duration, Instant};

/// A repeated failure logs a warning at most this often.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// Rate-limits the warnings of one kind of failure (`what`, e.g. a maintenance duty's name).
#[derive(Debug)]
pub struct Warnings {
    what: &'static str,
    last: Option<Instant>,
    /// Failures since the last warning.
    unlogged: u64,
}

impl Warnings {
    /// Warnings about `what`, logged in the `what` field.
    pub const fn new(what: &'static str) -> Self {
        Self {
            what,
            last: None,
            unlogged: 0,
        }
    }

    /// Records a failure: warns if none was logged in the last [`WARN_EVERY`], else counts it.
    /// Returns whether it warned.
    pub fn failed(&mut self, error: &dyn Display) -> bool {
        let now = Instant::now();
        if self.last.is_some_and(|at| now - at < WARN_EVERY) {
            self.unlogged += 1;
            return false;
        }
        tracing::warn!(
            what = self.what,
            error = %error,
            failures_since_last_warning = self.unlogged + 1,
            "repeated failure (warned at most every 10 s)"
        );
        self.last = Some(now);
        self.unlogged = 0;
        true
    }

    /// Records a success: says so if failures went unlogged since the last warning.
    pub fn succeeded(&mut self) {
        if self.unlogged > 0 {
            tracing::info!(
                what = self.what,
                unlogged_failures = self.unlogged,
                "recovered"
            );
            self.unlogged = 0;
        }
    }

    /// Failures counted since the last warning.
    pub fn unlogged(&self) -> u64 {
        self.unlogged
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_failures_warn_once_per_period_with_a_count() {
        let mut warnings = Warnings::new("test");
        let e = "down";
        assert!(warnings.failed(&e), "the first failure warns");
        let first = warnings.last;
        assert!(!warnings.failed(&e));
        assert!(!warnings.failed(&e));
        assert_eq!(warnings.unlogged(), 2, "two failures held back");
        assert_eq!(warnings.last, first, "no second warning within the period");
        warnings.succeeded();
        assert_eq!(warnings.unlogged(), 0);
        assert!(
            !warnings.failed(&e),
            "still one warning per period after a recovery"
        );
    }
}
