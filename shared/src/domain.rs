//! Domain types that cross the API/worker boundary.

use serde::{Deserialize, Serialize};

/// The engine a source speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum ResourceKind {
    Postgres,
    Mysql,
}

impl ResourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Mysql => "mysql",
        }
    }
}

/// A job's place in its lifecycle. PostgreSQL holds it; Redis only carries deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Retrying,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Retrying => "retrying",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => Self::Queued,
            "running" => Self::Running,
            "retrying" => Self::Retrying,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }
}

/// Whether retrying can help. Decided where the error arises, never guessed from text later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorClass {
    Transient,
    Permanent,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transient => "transient",
            Self::Permanent => "permanent",
        }
    }
}

/// What a finished sync reports in the job's `stats`: counted by
/// [`crate::db::catalog::write_snapshot`] as it diffs the snapshot against the stored catalog.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncStats {
    pub databases: u64,
    pub schemas: u64,
    pub tables: u64,
    pub columns: u64,
    pub tables_added: u64,
    pub tables_changed: u64,
    pub tables_removed: u64,
    pub tables_unchanged: u64,
    /// Statements issued against the source, summed over its databases.
    pub source_statements: u64,
}

/// A resource's overrides of the deployment's retry policy; every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryOverrides {
    /// First backoff ceiling, in milliseconds.
    pub base_ms: Option<u64>,
    /// Growth of the ceiling per attempt.
    pub factor: Option<f64>,
    /// Largest backoff ceiling, in milliseconds.
    pub cap_ms: Option<u64>,
    /// Attempts before the job ends `failed`.
    pub max_attempts: Option<i32>,
}

impl RetryOverrides {
    /// Checks ranges. The error is meant for a 422 body.
    pub fn validate(&self) -> Result<(), String> {
        const DAY_MS: u64 = 86_400_000;
        if self.base_ms.is_some_and(|b| !(1..=DAY_MS).contains(&b)) {
            return Err("`retry_policy.base_ms` must be between 1 and 86400000".into());
        }
        if self.cap_ms.is_some_and(|c| !(1..=DAY_MS).contains(&c)) {
            return Err("`retry_policy.cap_ms` must be between 1 and 86400000".into());
        }
        if self.factor.is_some_and(|f| !(1.0..=10.0).contains(&f)) {
            return Err("`retry_policy.factor` must be between 1 and 10".into());
        }
        if self.max_attempts.is_some_and(|m| !(1..=100).contains(&m)) {
            return Err("`retry_policy.max_attempts` must be between 1 and 100".into());
        }
        Ok(())
    }
}
