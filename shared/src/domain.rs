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
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, sqlx::Type,
)]
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

    /// Every state, in lifecycle order (for error messages that list the valid ones).
    pub const ALL: [Self; 6] = [
        Self::Queued,
        Self::Running,
        Self::Retrying,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
    ];
}

/// Whether retrying can help. Decided where the error arises, never guessed from text later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
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

/// Where a running attempt is, for clients polling its job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub phase: Phase,
    /// Tables and views being written, once the scan has counted them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objects_total: Option<u64>,
}

/// The steps of an attempt that a client can see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Reading the source's catalog (set by the claim).
    Scanning,
    /// Writing what changed to the catalog database.
    Writing,
}
