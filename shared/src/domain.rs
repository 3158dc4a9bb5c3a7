//! Domain types that cross the API/worker boundary.

use serde::{Deserialize, Serialize};

/// The engine a source speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum ResourceKind {
    /// PostgreSQL (and compatible servers).
    Postgres,
    /// MySQL or MariaDB; `mariadb` is accepted as its alias.
    #[serde(alias = "mariadb")]
    Mysql,
}

// By hand, because the derive cannot list a serde alias among the accepted values.
impl utoipa::PartialSchema for ResourceKind {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(["postgres", "mysql", "mariadb"]))
            .description(Some(
                "The engine a source speaks: `postgres`, or `mysql` for MySQL and MariaDB \
                 (`mariadb` is accepted as an alias and answered as `mysql`).",
            ))
            .into()
    }
}

impl utoipa::ToSchema for ResourceKind {}

impl ResourceKind {
    /// The lowercase name used in JSON and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Mysql => "mysql",
        }
    }
}

/// What started a job: shown on the job, a filter of the job list, and the label of
/// `metasync_jobs_enqueued_total`. Derived from the job row (`db::jobs::TRIGGER_SQL`), not stored.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum Trigger {
    /// `POST /v1/resources/{id}/sync`.
    Manual,
    /// `POST /v1/jobs/{id}/retry`.
    Retry,
    /// `POST /v1/syncs`.
    Batch,
    /// A resource's schedule ticked.
    Schedule,
}

impl Trigger {
    /// The `trigger` label value of `metasync_jobs_enqueued_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Manual => "manual",
            Self::Retry => "retry",
            Self::Batch => "batch",
            Self::Schedule => "schedule",
        }
    }
}

/// A job's place in its lifecycle. PostgreSQL holds it; Redis only carries deliveries.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    sqlx::Type,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum JobState {
    /// Waiting in the delivery queue for a worker.
    Queued,
    /// An attempt holds a lease on it.
    Running,
    /// An attempt failed transiently; another is due at `next_attempt_at`.
    Retrying,
    /// The last attempt wrote the catalog. Terminal.
    Succeeded,
    /// Out of attempts, or a permanent error. Terminal.
    Failed,
    /// Cancelled by a client before it finished. Terminal.
    Cancelled,
}

impl JobState {
    /// The lowercase name used in JSON and in the database.
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

    /// Whether the job will never run again.
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
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum ErrorClass {
    /// Might succeed later: network, timeouts, lost leases, server overload.
    Transient,
    /// Will fail again the same way: bad credentials, unknown database, missing privileges.
    Permanent,
}

impl ErrorClass {
    /// The lowercase name used in JSON and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transient => "transient",
            Self::Permanent => "permanent",
        }
    }
}

/// What a finished sync reports in the job's `stats`: counted by
/// [`crate::db::catalog::write_snapshot`] as it diffs the snapshot against the stored catalog.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SyncStats {
    /// Databases scanned.
    pub databases: u64,
    /// Schemas scanned, all databases together.
    pub schemas: u64,
    /// Tables and views scanned.
    pub tables: u64,
    /// Columns of the scanned tables.
    pub columns: u64,
    /// Tables new since the previous sync.
    pub tables_added: u64,
    /// Tables whose definition differs from the stored one.
    pub tables_changed: u64,
    /// Tables gone from the source, and so from the catalog.
    pub tables_removed: u64,
    /// Tables stored already and identical.
    pub tables_unchanged: u64,
    /// Unchanged tables whose statistics (row estimate, estimated bytes) moved and were
    /// refreshed, in one statement; not a change of their definition. 0 in jobs finished
    /// before it was counted.
    #[serde(default)]
    pub tables_statistics_updated: u64,
    /// Statements issued against the source, summed over its databases.
    pub source_statements: u64,
}

/// Something a sync could not read although the job succeeded, kept with the job (`warnings`
/// in `GET /v1/jobs/{id}`). What a job cannot do without (no database read at all, a catalog
/// it cannot query) fails it instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobWarning {
    /// What kind of gap: stable, for programs to match on.
    pub code: WarningCode,
    /// The gap in words, with what to grant or fix.
    pub message: String,
    /// The source database concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// The objects concerned, as `schema.name`, at most [`JobWarning::MAX_OBJECTS`] (the
    /// message gives the whole count).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<String>,
}

impl JobWarning {
    /// Objects named in one warning: enough to act on, bounded for a source with thousands.
    pub const MAX_OBJECTS: usize = 100;

    /// A warning about `objects` (all of them counted in `message`, the first
    /// [`Self::MAX_OBJECTS`] listed).
    pub fn about(
        code: WarningCode,
        message: String,
        database: Option<String>,
        mut objects: Vec<String>,
    ) -> Self {
        objects.truncate(Self::MAX_OBJECTS);
        Self {
            code,
            message,
            database,
            objects,
        }
    }
}

/// What a [`JobWarning`] is about. Sent as the snake_case string; new codes may be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WarningCode {
    /// Views whose definition the user may not read (MySQL/MariaDB without `SHOW VIEW`): they
    /// are stored with `view_definition: null`.
    ViewDefinitionHidden,
    /// Views whose columns the server could not list (MySQL/MariaDB: the view refers to a
    /// table, column or function that no longer exists, or its definer lacks rights): they
    /// are stored without columns.
    ViewColumnsUnreadable,
    /// A database named in `options.databases` does not exist (or, on MySQL/MariaDB, the user
    /// holds no privilege in it, which hides it the same way), or one listed by the server
    /// was dropped before it was read; the others were read.
    DatabaseNotFound,
}

/// Where a running attempt is, for clients polling its job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Progress {
    /// The step the attempt is in.
    pub phase: Phase,
    /// Tables and views being written, once the scan has counted them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objects_total: Option<u64>,
}

/// The steps of an attempt that a client can see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Reading the source's catalog (set by the claim).
    Scanning,
    /// Writing what changed to the catalog database.
    Writing,
}
