//! Webhooks (`webhooks`), their outbox of deliveries (`webhook_deliveries`, filled by the
//! `jobs_record_webhook_events` trigger in the transaction that ends a job) and the record of
//! every attempt (`webhook_attempts`). The API manages hooks and reads deliveries; workers
//! claim due deliveries with `for update skip locked` and record what the receiver answered.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::types::Json;
use sqlx::{FromRow, PgExecutor};

use crate::custody::{RecordFormat, SealedPassword, WebhookTarget};
use crate::ids::{DeliveryId, TenantId, WebhookId};

/// What a webhook can subscribe to.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
pub enum WebhookEvent {
    /// A job ended `failed` (out of attempts, or a permanent error).
    #[serde(rename = "job.failed")]
    JobFailed,
    /// A job ended `succeeded`.
    #[serde(rename = "job.succeeded")]
    JobSucceeded,
    /// A successful sync changed the stored catalog; the data carries the count per change kind.
    #[serde(rename = "catalog.changed")]
    CatalogChanged,
    /// A resource went stale: its schedule's syncs stopped succeeding in time (the definition of
    /// `metasync_resources{freshness="stale"}`); once per last success.
    #[serde(rename = "resource.stale")]
    ResourceStale,
}

impl WebhookEvent {
    /// The name on the wire and in the table.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::JobFailed => "job.failed",
            Self::JobSucceeded => "job.succeeded",
            Self::CatalogChanged => "catalog.changed",
            Self::ResourceStale => "resource.stale",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [
            Self::JobFailed,
            Self::JobSucceeded,
            Self::CatalogChanged,
            Self::ResourceStale,
        ]
        .into_iter()
        .find(|e| e.as_str() == text)
    }
}

/// A webhook as the API shows it: never its secret.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Webhook {
    /// The webhook's id.
    pub id: WebhookId,
    /// Where deliveries are POSTed.
    pub url: String,
    /// The events it receives.
    pub events: Vec<WebhookEvent>,
    /// False once the receiver answered `410 Gone` (or a `PATCH` turned it off).
    pub enabled: bool,
    /// Why it was turned off, when it was.
    pub disabled_reason: Option<String>,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

#[derive(FromRow)]
struct WebhookRow {
    id: WebhookId,
    url: String,
    events: Vec<String>,
    enabled: bool,
    disabled_reason: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<WebhookRow> for Webhook {
    fn from(row: WebhookRow) -> Self {
        Self {
            id: row.id,
            url: row.url,
            // The API writes only known names; an unknown one (a newer version's) is not shown.
            events: row
                .events
                .iter()
                .filter_map(|e| WebhookEvent::parse(e))
                .collect(),
            enabled: row.enabled,
            disabled_reason: row.disabled_reason,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

const COLUMNS: &str = "id, url, events, enabled, disabled_reason, created_at, updated_at";

/// Stores a new webhook with its sealed secret.
pub async fn insert(
    db: impl PgExecutor<'_>,
    tenant: &TenantId,
    id: WebhookId,
    url: &str,
    events: &[WebhookEvent],
    secret: &SealedPassword,
) -> Result<Webhook, sqlx::Error> {
    let events: Vec<&str> = events.iter().map(|e| e.as_str()).collect();
    let row: WebhookRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "insert into webhooks (id, tenant_id, url, events, secret_sealed, secret_key_id)
         values ($1, $2, $3, $4, $5, $6)
         returning {COLUMNS}"
    )))
    .bind(id)
    .bind(tenant)
    .bind(url)
    .bind(&events)
    .bind(&secret.record)
    .bind(&secret.key_id)
    .fetch_one(db)
    .await?;
    Ok(row.into())
}

/// The tenant's webhooks after `after`, oldest first.
pub async fn list(
    db: impl PgExecutor<'_>,
    tenant: &TenantId,
    after: Option<WebhookId>,
    limit: i64,
) -> Result<Vec<Webhook>, sqlx::Error> {
    let rows: Vec<WebhookRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from webhooks
         where tenant_id = $1 and ($2::uuid is null or id > $2)
         order by id limit $3"
    )))
    .bind(tenant)
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// One of the tenant's webhooks.
pub async fn get(
    db: impl PgExecutor<'_>,
    tenant: &TenantId,
    id: WebhookId,
) -> Result<Option<Webhook>, sqlx::Error> {
    let row: Option<WebhookRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from webhooks where tenant_id = $1 and id = $2"
    )))
    .bind(tenant)
    .bind(id)
    .fetch_optional(db)
    .await?;
    Ok(row.map(Into::into))
}

/// Turns a webhook on or off. Turning it on clears the reason it was turned off; turning it
/// off drops its pending deliveries (in one statement, so none is sent after).
pub async fn set_enabled(
    db: impl PgExecutor<'_>,
    tenant: &TenantId,
    id: WebhookId,
    enabled: bool,
) -> Result<Option<Webhook>, sqlx::Error> {
    let row: Option<WebhookRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "with hook as (
             update webhooks
             set enabled = $3, updated_at = now(),
                 disabled_reason = case when $3 then null else 'turned off through the API' end
             where tenant_id = $1 and id = $2
             returning {COLUMNS}
         ), dropped as (
             update webhook_deliveries d set state = 'dropped', finished_at = now()
             from hook where not $3 and d.webhook_id = hook.id and d.state = 'pending'
         )
         select {COLUMNS} from hook"
    )))
    .bind(tenant)
    .bind(id)
    .bind(enabled)
    .fetch_optional(db)
    .await?;
    Ok(row.map(Into::into))
}

/// Deletes a webhook and its deliveries. Returns its URL, or `None` if it did not exist.
pub async fn delete(
    db: impl PgExecutor<'_>,
    tenant: &TenantId,
    id: WebhookId,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("delete from webhooks where tenant_id = $1 and id = $2 returning url")
        .bind(tenant)
        .bind(id)
        .fetch_optional(db)
        .await
}

/// Where a delivery is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum DeliveryState {
    /// Waiting for its next attempt (`next_attempt_at`).
    Pending,
    /// A worker is sending it.
    Delivering,
    /// The receiver answered 2xx.
    Succeeded,
    /// Out of attempts.
    Failed,
    /// Not sent: its webhook was turned off (410 Gone, or through the API).
    Dropped,
}

/// One try of a delivery.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeliveryAttempt {
    /// 1 for the first try.
    pub attempt: i32,
    /// When the attempt began.
    pub started_at: DateTime<Utc>,
    /// How long it took, connect to status line.
    pub duration_ms: i32,
    /// The receiver's status, when it answered.
    pub status_code: Option<i32>,
    /// Why it did not count as delivered.
    pub error: Option<String>,
}

/// One event to one webhook, with its attempts.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema, FromRow)]
pub struct Delivery {
    /// Also the `webhook-id` header of every attempt.
    pub id: DeliveryId,
    /// The webhook it goes to.
    pub webhook_id: WebhookId,
    /// `job.failed`, `job.succeeded`, `catalog.changed` or `resource.stale`.
    pub event: String,
    /// Where it is.
    pub state: DeliveryState,
    /// Attempts made so far.
    pub attempts: i32,
    /// When it is (or was) next due; meaningful while `pending`.
    pub next_attempt_at: DateTime<Utc>,
    /// The last attempt's HTTP status, if the receiver answered.
    pub last_status: Option<i32>,
    /// Why the last attempt did not deliver it.
    pub last_error: Option<String>,
    /// When the event happened (the job ended).
    pub created_at: DateTime<Utc>,
    /// When it was delivered, failed for good or dropped.
    pub finished_at: Option<DateTime<Utc>>,
    /// The body sent.
    #[schema(value_type = Object)]
    pub payload: Json<serde_json::Value>,
    /// Every try, first first.
    #[schema(value_type = Vec<DeliveryAttempt>)]
    pub attempt_log: Json<Vec<DeliveryAttempt>>,
}

/// The webhook's deliveries, newest first, before `before`.
pub async fn deliveries(
    db: impl PgExecutor<'_>,
    tenant: &TenantId,
    webhook: WebhookId,
    before: Option<DeliveryId>,
    limit: i64,
) -> Result<Vec<Delivery>, sqlx::Error> {
    sqlx::query_as(
        "select d.id, d.webhook_id, d.event, d.state, d.attempts, d.next_attempt_at,
                d.last_status, d.last_error, d.created_at, d.finished_at,
                coalesce(d.payload, webhook_job_payload(d.event, d.job_id, d.created_at)) as payload,
                coalesce((select json_agg(json_build_object(
                              'attempt', a.attempt, 'started_at', a.started_at,
                              'duration_ms', a.duration_ms, 'status_code', a.status_code,
                              'error', a.error) order by a.attempt)
                          from webhook_attempts a where a.delivery_id = d.id), '[]') as attempt_log
         from webhook_deliveries d
         where d.tenant_id = $1 and d.webhook_id = $2 and ($3::uuid is null or d.id < $3)
         order by d.id desc limit $4",
    )
    .bind(tenant)
    .bind(webhook)
    .bind(before)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// A webhook's sealed signing secret, with what it is sealed for.
#[derive(Debug, FromRow)]
pub struct HookSecret {
    /// The webhook.
    pub webhook_id: WebhookId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// Where it posts.
    pub url: String,
    secret_sealed: Vec<u8>,
    secret_key_id: String,
}

impl HookSecret {
    /// The sealed signing secret.
    pub fn sealed_secret(&self) -> SealedPassword {
        SealedPassword {
            key_id: self.secret_key_id.clone(),
            record: self.secret_sealed.clone(),
            format: RecordFormat::CURRENT,
        }
    }

    /// What the secret is bound to.
    pub fn target(&self) -> WebhookTarget<'_> {
        WebhookTarget {
            tenant: &self.tenant_id,
            webhook: self.webhook_id,
            url: &self.url,
        }
    }
}

/// A delivery a worker has claimed: what to send, where, and the sealed secret to sign with.
#[derive(Debug, FromRow)]
pub struct Claimed {
    /// The delivery (the `webhook-id` header).
    pub id: DeliveryId,
    /// Its webhook, where it goes and the secret to sign with.
    #[sqlx(flatten)]
    pub hook: HookSecret,
    /// The body.
    pub payload: Json<serde_json::Value>,
    /// This attempt's number (1 for the first).
    pub attempt: i32,
}

/// Claims one due delivery of an enabled webhook (pending and due, or delivering with a lapsed
/// lease: its worker died mid-send), for `lease`. Skips rows other workers hold.
pub async fn claim_due(
    db: impl PgExecutor<'_>,
    lease: Duration,
) -> Result<Option<Claimed>, sqlx::Error> {
    sqlx::query_as(
        "with next as (
             select d.id from webhook_deliveries d
             where (d.state = 'pending' and d.next_attempt_at <= now())
                or (d.state = 'delivering' and d.lease_expires_at < now())
             order by d.next_attempt_at
             limit 1
             for update of d skip locked
         ), claimed as (
             update webhook_deliveries d
             set state = 'delivering', attempts = d.attempts + 1,
                 lease_expires_at = now() + $1 * interval '1 millisecond'
             from next where d.id = next.id
             returning d.id, d.tenant_id, d.webhook_id, d.event, d.job_id, d.payload, d.created_at,
                       d.attempts
         )
         select c.id, c.tenant_id, c.webhook_id, w.url,
                coalesce(c.payload, webhook_job_payload(c.event, c.job_id, c.created_at)) as payload,
                c.attempts as attempt,
                w.secret_sealed, w.secret_key_id
         from claimed c join webhooks w on w.id = c.webhook_id",
    )
    .bind(lease.as_millis() as i64)
    .fetch_optional(db)
    .await
}

/// What one attempt came to.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    /// When it began.
    pub started_at: DateTime<Utc>,
    /// How long it took.
    pub duration: Duration,
    /// The receiver's status, if it answered.
    pub status_code: Option<u16>,
    /// Why it did not deliver.
    pub error: Option<String>,
    /// What happens next.
    pub next: AttemptOutcome,
}

/// What happens to the delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// Delivered.
    Succeeded,
    /// Try again after the delay.
    RetryAfter(Duration),
    /// Out of attempts.
    Failed,
    /// The receiver answered 410 Gone: the webhook is turned off and its pending deliveries
    /// are dropped.
    Gone,
}

/// Records attempt `claimed.attempt` and moves the delivery on, in one transaction, guarded
/// by the delivery still being this attempt's (a lapsed lease taken over writes nothing).
pub async fn record_attempt(
    pool: &sqlx::PgPool,
    claimed: &Claimed,
    record: &AttemptRecord,
) -> Result<(), sqlx::Error> {
    let (state, delay_ms) = match record.next {
        AttemptOutcome::Succeeded => ("succeeded", None),
        AttemptOutcome::RetryAfter(delay) => ("pending", Some(delay.as_millis() as i64)),
        AttemptOutcome::Failed => ("failed", None),
        AttemptOutcome::Gone => ("dropped", None),
    };
    let status = record.status_code.map(i32::from);
    let mut tx = pool.begin().await?;
    let moved = sqlx::query(
        "update webhook_deliveries
         set state = $3, last_status = $4, last_error = $5, lease_expires_at = null,
             next_attempt_at = case when $6::bigint is null then next_attempt_at
                                    else now() + $6 * interval '1 millisecond' end,
             finished_at = case when $3 = 'pending' then null else now() end
         where id = $1 and attempts = $2 and state = 'delivering'",
    )
    .bind(claimed.id)
    .bind(claimed.attempt)
    .bind(state)
    .bind(status)
    .bind(record.error.as_deref())
    .bind(delay_ms)
    .execute(&mut *tx)
    .await?;
    if moved.rows_affected() == 0 {
        // Another worker took it over after our lease lapsed: its attempt is the record.
        return Ok(());
    }
    sqlx::query(
        "insert into webhook_attempts
             (delivery_id, attempt, tenant_id, started_at, duration_ms, status_code, error)
         values ($1, $2, $3, $4, $5, $6, $7)
         on conflict do nothing",
    )
    .bind(claimed.id)
    .bind(claimed.attempt)
    .bind(&claimed.hook.tenant_id)
    .bind(record.started_at)
    .bind(i32::try_from(record.duration.as_millis()).unwrap_or(i32::MAX))
    .bind(status)
    .bind(record.error.as_deref())
    .execute(&mut *tx)
    .await?;
    if record.next == AttemptOutcome::Gone {
        sqlx::query(
            "with hook as (
                 update webhooks set enabled = false, updated_at = now(),
                        disabled_reason = 'the receiver answered 410 Gone'
                 where id = $1 returning id
             )
             update webhook_deliveries d set state = 'dropped', finished_at = now()
             from hook where d.webhook_id = hook.id and d.state = 'pending'",
        )
        .bind(claimed.hook.webhook_id)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// Deletes finished deliveries (succeeded, failed, dropped) that finished more than
/// `retention` ago, with their attempts, keeping each hook's latest `keep` deliveries whatever
/// their age; at most `limit` at a time. Returns how many.
pub async fn prune_deliveries(
    db: impl PgExecutor<'_>,
    retention: Duration,
    keep: i64,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    // One bound per hook (an index probe of `webhook_deliveries_by_hook`, `keep` rows deep),
    // then only the hook's older rows are looked at: not a window over the whole table.
    let done = sqlx::query(
        "delete from webhook_deliveries where id in (
             select d.id
             from webhooks w
             cross join lateral (
                 select k.id from webhook_deliveries k
                 where k.webhook_id = w.id
                 order by k.id desc offset $2 limit 1
             ) beyond_kept
             join webhook_deliveries d on d.webhook_id = w.id and d.id <= beyond_kept.id
             where d.state in ('succeeded', 'failed', 'dropped')
               and d.finished_at < now() - $1 * interval '1 millisecond'
             limit $3)",
    )
    .bind(retention.as_millis() as i64)
    .bind(keep)
    .bind(limit)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Up to `limit` webhooks whose secret is not sealed under `key_id`, after `after` in id
/// order: the next page for `rotate-master-key`.
pub async fn needing_reseal(
    db: impl PgExecutor<'_>,
    key_id: &str,
    after: Option<WebhookId>,
    limit: i64,
) -> Result<Vec<HookSecret>, sqlx::Error> {
    sqlx::query_as(
        "select id as webhook_id, tenant_id, url, secret_sealed, secret_key_id from webhooks
         where secret_key_id <> $1 and ($2::uuid is null or id > $2)
         order by id limit $3",
    )
    .bind(key_id)
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Replaces a webhook's sealed secret with `resealed` if it still holds `old`. Returns whether
/// it did (a webhook deleted meanwhile is left alone).
pub async fn reseal(
    db: impl PgExecutor<'_>,
    id: WebhookId,
    old: &SealedPassword,
    resealed: &SealedPassword,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "update webhooks set secret_sealed = $4, secret_key_id = $5
         where id = $1 and secret_key_id = $2 and secret_sealed = $3",
    )
    .bind(id)
    .bind(&old.key_id)
    .bind(&old.record)
    .bind(&resealed.record)
    .bind(&resealed.key_id)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records a `resource.stale` delivery for every enabled hook that asked for it, for each
/// resource that is stale (docs/metrics.md: an interval schedule's last success older than twice
/// the interval plus 60 s, or a next tick over 60 s past; a failing resource is not stale, its
/// `job.failed` said so) and was not yet notified since its last success. Returns how many
/// resources went stale.
pub async fn record_stale(db: impl PgExecutor<'_>) -> Result<u64, sqlx::Error> {
    let stale: i64 = sqlx::query_scalar(
        "with stale as (
             update resources r set stale_notified_for = r.last_succeeded_at
             where r.last_error is null and r.last_succeeded_at is not null
               and (r.last_succeeded_at
                        < now() - make_interval(secs => 2 * r.sync_interval_seconds + 60)
                    or r.next_sync_at < now() - interval '60 seconds')
               and r.stale_notified_for is distinct from r.last_succeeded_at
             returning r.id, r.tenant_id, r.name, r.last_succeeded_at, r.next_sync_at
         ), recorded as (
             insert into webhook_deliveries (id, tenant_id, webhook_id, event, payload)
             select metasync_uuid_v7(), w.tenant_id, w.id, 'resource.stale',
                    jsonb_build_object('type', 'resource.stale', 'timestamp', now(),
                        'data', jsonb_build_object(
                            'resource_id', s.id, 'name', s.name,
                            'last_succeeded_at', s.last_succeeded_at,
                            'next_sync_at', s.next_sync_at))
             from stale s
                  join webhooks w on w.tenant_id = s.tenant_id and w.enabled
                      and 'resource.stale' = any (w.events)
         )
         select count(*) from stale",
    )
    .fetch_one(db)
    .await?;
    Ok(stale.unsigned_abs())
}
