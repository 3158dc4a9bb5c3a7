//! The audit log (`audit_events`): who changed what, and when. Each change a caller makes is
//! recorded by [`record`] on the connection of the change's own transaction, so a change and
//! its record commit or roll back together. Details name what changed (field names, the job a
//! sync created), never a value of a password or a webhook secret.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgExecutor;
use sqlx::types::Json;
use uuid::Uuid;

use crate::ids::{JobId, TenantId};

/// What was done. A fixed vocabulary, checked by the table.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[sqlx(type_name = "text")]
pub enum AuditAction {
    /// A resource was registered (through `/v1` or the internal API).
    #[serde(rename = "resource.create")]
    #[sqlx(rename = "resource.create")]
    ResourceCreate,
    /// A resource's definition (or its schedule, options, retry policy, password) changed.
    #[serde(rename = "resource.update")]
    #[sqlx(rename = "resource.update")]
    ResourceUpdate,
    /// A resource was deleted with its jobs and catalog.
    #[serde(rename = "resource.delete")]
    #[sqlx(rename = "resource.delete")]
    ResourceDelete,
    /// A sync of one resource was requested and created a job.
    #[serde(rename = "resource.sync")]
    #[sqlx(rename = "resource.sync")]
    ResourceSync,
    /// A stored resource's connection was tested (its stored password sent to its server).
    #[serde(rename = "resource.test")]
    #[sqlx(rename = "resource.test")]
    ResourceTest,
    /// A batch of syncs was created.
    #[serde(rename = "batch.create")]
    #[sqlx(rename = "batch.create")]
    BatchCreate,
    /// A job was cancelled (or its cancel requested while it runs).
    #[serde(rename = "job.cancel")]
    #[sqlx(rename = "job.cancel")]
    JobCancel,
    /// A failed or cancelled job was retried as a new job.
    #[serde(rename = "job.retry")]
    #[sqlx(rename = "job.retry")]
    JobRetry,
    /// A webhook was registered.
    #[serde(rename = "webhook.create")]
    #[sqlx(rename = "webhook.create")]
    WebhookCreate,
    /// A webhook was turned on or off.
    #[serde(rename = "webhook.update")]
    #[sqlx(rename = "webhook.update")]
    WebhookUpdate,
    /// A webhook was deleted with its deliveries.
    #[serde(rename = "webhook.delete")]
    #[sqlx(rename = "webhook.delete")]
    WebhookDelete,
}

impl AuditAction {
    /// The kind of object the action is about.
    pub fn object_type(self) -> ObjectType {
        match self {
            Self::ResourceCreate
            | Self::ResourceUpdate
            | Self::ResourceDelete
            | Self::ResourceSync
            | Self::ResourceTest => ObjectType::Resource,
            Self::BatchCreate => ObjectType::Batch,
            Self::JobCancel | Self::JobRetry => ObjectType::Job,
            Self::WebhookCreate | Self::WebhookUpdate | Self::WebhookDelete => ObjectType::Webhook,
        }
    }
}

/// The kind of object an event is about.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum ObjectType {
    /// A resource (`resources.id`).
    Resource,
    /// A job (`jobs.id`).
    Job,
    /// A batch (`batches.id`).
    Batch,
    /// A webhook (`webhooks.id`).
    Webhook,
}

/// Who made a change: a token's subject, or an internal API key by its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(String);

impl Actor {
    /// The prefix of the internal API key's subjects; token subjects may not start with it.
    pub const INTERNAL_KEY_PREFIX: &'static str = "internal-key:";

    /// A caller authenticated by a token whose `sub` is `subject`.
    pub fn token(subject: impl Into<String>) -> Self {
        Self(subject.into())
    }

    /// A caller authenticated by the internal API key `key_id` (the id, never the secret).
    pub fn internal_key(key_id: &str) -> Self {
        Self(format!("{}{key_id}", Self::INTERNAL_KEY_PREFIX))
    }

    /// The subject as recorded.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Non-secret details of an event. Each field is present only where it applies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditDetails {
    /// Names of the fields a change set (`password` when a new password was given).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
    /// The resource's name, on create and delete (so a deleted resource is recognisable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The resource's id in the platform that pushed it through the internal API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// The job a sync or retry created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<JobId>,
    /// How many jobs a batch created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<i64>,
    /// A cancel's outcome: `cancelled` (it never runs) or `requested` (it stops at its next
    /// checkpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// A webhook's URL host, on create and delete (not the URL: its path or query may carry
    /// the receiver's token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Whether a webhook update turned it on or off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// One recorded event, as `GET /v1/audit` returns it.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct AuditEvent {
    /// Event id (v7).
    pub id: Uuid,
    /// Who: a token's `sub`, or `internal-key:<key id>`.
    pub subject: String,
    /// What was done.
    pub action: AuditAction,
    /// The kind of object.
    pub object_type: ObjectType,
    /// The object's id.
    pub object_id: Uuid,
    /// When (the change's transaction time).
    pub at: DateTime<Utc>,
    /// What changed, without secrets.
    #[schema(value_type = AuditDetails)]
    pub details: Json<AuditDetails>,
}

/// Records that `actor` did `action` to `object_id` in `tenant`. Call it on the transaction of
/// the change itself.
pub async fn record(
    db: impl PgExecutor<'_>,
    tenant: &TenantId,
    actor: &Actor,
    action: AuditAction,
    object_id: Uuid,
    details: AuditDetails,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into audit_events (id, tenant_id, subject, action, object_type, object_id, details)
         values ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(Uuid::now_v7())
    .bind(tenant)
    .bind(actor.as_str())
    .bind(action)
    .bind(action.object_type())
    .bind(object_id)
    .bind(Json(details))
    .execute(db)
    .await?;
    Ok(())
}

/// Which events to list, and the page.
#[derive(Debug, Clone)]
pub struct AuditFilter {
    /// Only events about this object.
    pub object_id: Option<Uuid>,
    /// Only this action.
    pub action: Option<AuditAction>,
    /// Only events at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// The sort key of the previous page's last event.
    pub before: Option<(DateTime<Utc>, Uuid)>,
    /// Page size.
    pub limit: i64,
}

/// A page of the tenant's events, newest first.
pub async fn list(
    db: impl PgExecutor<'_>,
    tenant: &TenantId,
    filter: &AuditFilter,
) -> Result<Vec<AuditEvent>, sqlx::Error> {
    sqlx::query_as(
        "select id, subject, action, object_type, object_id, at, details from audit_events
         where tenant_id = $1
           and ($2::uuid is null or object_id = $2)
           and ($3::text is null or action = $3)
           and ($4::timestamptz is null or at >= $4)
           and ($5::timestamptz is null or (at, id) < ($5, $6))
         order by at desc, id desc
         limit $7",
    )
    .bind(tenant)
    .bind(filter.object_id)
    .bind(filter.action)
    .bind(filter.since)
    .bind(filter.before.map(|(at, _)| at))
    .bind(filter.before.map(|(_, id)| id))
    .bind(filter.limit)
    .fetch_all(db)
    .await
}

/// Deletes events older than `retention` (the job retention), at most `limit` at a time.
/// Returns how many.
pub async fn prune(
    db: impl PgExecutor<'_>,
    retention: std::time::Duration,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "delete from audit_events where id in (
             select id from audit_events
             where at < now() - $1 * interval '1 millisecond'
             limit $2)",
    )
    .bind(retention.as_millis() as i64)
    .bind(limit)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}
