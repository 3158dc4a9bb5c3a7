//! The catalog reads behind the API: a resource's tables, schemas and change history, one
//! table with its definition, and name search across a tenant. Every query filters by the
//! caller's tenant, and every listing is in keyset order after the previous page's last key.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgExecutor;

use crate::catalog::{ChangeKind, SequenceInfo, TableInfo, TypeInfo};
use crate::ids::{ChangeId, JobId, ResourceId, SchemaId, TableId, TenantId};

/// A stored table in a listing: where it is stored and the few facts a list shows, not its
/// definition (see [`TableDetail`]).
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct TableSummary {
    /// Stored table id, stable across syncs while the table exists.
    pub id: TableId,
    /// The resource the table was scanned from.
    pub resource_id: ResourceId,
    /// Source database the table is in.
    pub database: String,
    /// Schema name.
    pub schema: String,
    /// Table name.
    pub name: String,
    /// As in [`TableInfo::kind`].
    pub kind: String,
    /// The table's comment; `None` when unset.
    pub comment: Option<String>,
    /// Engine estimate as of the last sync; `None` for views.
    pub row_estimate: Option<i64>,
    /// Bytes on disk estimated from page counts, as of the last sync; `None` for views.
    pub estimated_bytes: Option<i64>,
    /// When a sync last changed this table's definition.
    pub last_changed_at: DateTime<Utc>,
}

const SUMMARY_COLUMNS: &str = "id, resource_id, database, schema_name as schema, name, kind, \
                               comment, row_estimate, estimated_bytes, last_changed_at";

/// Filters and keyset position for listing a resource's tables, ordered by
/// `(database, schema, name)`.
#[derive(Debug, Default)]
pub struct TableFilter {
    /// Exact database name to keep.
    pub database: Option<String>,
    /// Exact schema name to keep.
    pub schema: Option<String>,
    /// Exact kind to keep, as in [`TableInfo::kind`].
    pub kind: Option<String>,
    /// Substring of the table name, case-insensitive.
    pub q: Option<String>,
    /// The `(database, schema, name)` of the last table of the previous page.
    pub after: Option<(String, String, String)>,
    /// Page size; the caller clamps it.
    pub limit: i64,
}

/// A page of a resource's tables, filtered by `filter`.
pub async fn list_tables(
    db: impl PgExecutor<'_>,
    tenant: &TenantId,
    resource_id: ResourceId,
    filter: &TableFilter,
) -> Result<Vec<TableSummary>, sqlx::Error> {
    let (after_db, after_schema, after_name) = match &filter.after {
        Some((d, s, n)) => (Some(d.as_str()), Some(s.as_str()), Some(n.as_str())),
        None => (None, None, None),
    };
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {SUMMARY_COLUMNS} from catalog_tables
         where tenant_id = $1 and resource_id = $2
           and ($3::text is null or schema_name = $3)
           and ($4::text is null or kind = $4)
           and ($5::text is null or name ilike '%' || $5 || '%')
           and ($6::text is null or (database, schema_name, name) > ($6, $7, $8))
           and ($10::text is null or database = $10)
         order by database, schema_name, name
         limit $9"
    )))
    .bind(tenant)
    .bind(resource_id)
    .bind(filter.schema.as_deref())
    .bind(filter.kind.as_deref())
    .bind(filter.q.as_deref().map(escape_like))
    .bind(after_db)
    .bind(after_schema)
    .bind(after_name)
    .bind(filter.limit)
    .bind(filter.database.as_deref())
    .fetch_all(db)
    .await
}

/// Escapes `%`, `_` and `\` so user text matches literally inside `ilike`.
pub fn escape_like(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// A stored table with everything known about it: where it is stored, and its definition as
/// the last sync that changed it scanned it.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct TableDetail {
    /// Stored table id.
    pub id: TableId,
    /// The resource the table was scanned from.
    pub resource_id: ResourceId,
    /// Source database the table is in.
    pub database: String,
    /// When a sync last found the definition changed.
    pub last_changed_at: DateTime<Utc>,
    /// The definition as last scanned, columns included.
    #[sqlx(flatten)]
    #[serde(flatten)]
    pub definition: TableInfo,
}

/// One stored table of the tenant with its columns, or `None` (also for another tenant's).
pub async fn get_table(
    pool: &sqlx::PgPool,
    tenant: &TenantId,
    id: TableId,
) -> Result<Option<TableDetail>, sqlx::Error> {
    let table: Option<TableDetail> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {SUMMARY_COLUMNS}, owner, view_definition, details, constraints, indexes
         from catalog_tables where tenant_id = $1 and id = $2"
    )))
    .bind(tenant)
    .bind(id)
    .fetch_optional(pool)
    .await?;
    let Some(mut table) = table else {
        return Ok(None);
    };
    table.definition.columns = sqlx::query_as(
        "select position, name, data_type, nullable, default_value, comment, details
         from catalog_columns where tenant_id = $1 and table_id = $2 order by position",
    )
    .bind(tenant)
    .bind(id)
    .fetch_all(pool)
    .await?;
    Ok(Some(table))
}

/// A stored schema in a listing.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct SchemaSummary {
    /// Stored schema id.
    pub id: SchemaId,
    /// Source database the schema is in.
    pub database: String,
    /// Schema name.
    pub name: String,
    /// Owning role; `None` where the engine has no owner (MySQL).
    pub owner: Option<String>,
    /// The schema's comment; `None` when unset.
    pub comment: Option<String>,
    /// Stored tables and views in the schema.
    pub tables: i64,
    /// User-defined types (enums, domains), by name; empty where the engine has none.
    #[sqlx(json)]
    pub types: Vec<TypeInfo>,
    /// Sequences, by name; empty where the engine has none.
    #[sqlx(json)]
    pub sequences: Vec<SequenceInfo>,
}

/// A resource's schemas ordered by `(database, name)`, after the keyset position `after`.
pub async fn list_schemas(
    db: impl PgExecutor<'_>,
    tenant: &TenantId,
    resource_id: ResourceId,
    after: Option<(String, String)>,
    limit: i64,
) -> Result<Vec<SchemaSummary>, sqlx::Error> {
    let (after_db, after_name) = after.unzip();
    sqlx::query_as(
        "select s.id, s.database, s.name, s.owner, s.comment, s.types, s.sequences,
                (select count(*) from catalog_tables t
                 where t.resource_id = s.resource_id and t.database = s.database
                   and t.schema_name = s.name) as tables
         from catalog_schemas s
         where s.tenant_id = $1 and s.resource_id = $2
           and ($3::text is null or (s.database, s.name) > ($3, $4))
         order by s.database, s.name
         limit $5",
    )
    .bind(tenant)
    .bind(resource_id)
    .bind(after_db)
    .bind(after_name)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// One change-history entry.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct StoredChange {
    /// Entry id; v7, so ordering by id orders by time.
    pub id: ChangeId,
    /// Null once the job is purged; the history outlives it.
    pub job_id: Option<JobId>,
    /// Source database; `""` for `scope_changed`, a change of the resource itself.
    pub database: String,
    /// Schema name; `""` for `scope_changed`.
    pub schema: String,
    /// Absent for a change to the schema (or, `scope_changed`, the resource) itself. For
    /// `table_renamed` and the changes beside it, the table's new name.
    pub table: Option<String>,
    /// What changed.
    pub kind: ChangeKind,
    /// The column, constraint or index; `None` for the table or schema itself.
    pub object_name: Option<String>,
    /// `{"before": …, "after": …}`, one side absent for additions and removals; for
    /// `table_renamed` `{"schema", "name"}` each, for `column_renamed` `{"name"}`, for
    /// `scope_changed` the resource's scan options.
    pub details: serde_json::Value,
    /// When the sync recorded it.
    pub created_at: DateTime<Utc>,
}

/// Which of a resource's changes to list.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChangeFilter {
    /// At or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Recorded by this job.
    pub job_id: Option<JobId>,
    /// Of this kind.
    pub kind: Option<ChangeKind>,
}

/// A resource's changes that pass `filter`, oldest first, in `(created_at, id)` keyset order
/// after `after`.
pub async fn list_changes(
    db: impl PgExecutor<'_>,
    tenant: &TenantId,
    resource_id: ResourceId,
    filter: ChangeFilter,
    after: Option<(DateTime<Utc>, ChangeId)>,
    limit: i64,
) -> Result<Vec<StoredChange>, sqlx::Error> {
    let (after_at, after_id) = after.unzip();
    sqlx::query_as(
        "select id, job_id, database, schema_name as schema, table_name as table, kind,
                object_name, details, created_at
         from catalog_changes
         where tenant_id = $1 and resource_id = $2
           and ($3::timestamptz is null or created_at >= $3)
           and ($4::timestamptz is null or (created_at, id) > ($4, $5))
           and ($7::uuid is null or job_id = $7)
           and ($8::text is null or kind = $8)
         order by created_at, id
         limit $6",
    )
    .bind(tenant)
    .bind(resource_id)
    .bind(filter.since)
    .bind(after_at)
    .bind(after_id)
    .bind(limit)
    .bind(filter.job_id)
    .bind(filter.kind)
    .fetch_all(db)
    .await
}

/// What a [`SearchHit`] matched.
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
pub enum SearchHitKind {
    /// A table's name matched.
    Table,
    /// A column's name matched.
    Column,
}

/// A table or column whose name matched a search.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct SearchHit {
    /// Whether a table or a column matched.
    pub kind: SearchHitKind,
    /// The matched name: the table's or the column's.
    pub name: String,
    /// The table matched, or the table of the matched column.
    pub table_id: TableId,
    /// The column's position; 0 for a table (positions start at 1).
    pub position: i32,
    /// The resource the table belongs to.
    pub resource_id: ResourceId,
    /// That resource's name.
    pub resource_name: String,
    /// Source database.
    pub database: String,
    /// Schema name.
    pub schema: String,
    /// Table name (also for a column hit).
    pub table: String,
    /// The table's kind (`table`, `view`, …).
    pub table_kind: String,
    /// The column's type; absent for a table.
    pub data_type: Option<String>,
    /// The table's or column's comment (which may be what matched).
    pub comment: Option<String>,
    /// 0: the name is `q`; 1: the name contains `q`; 2: only the comment does.
    pub rank: i32,
}

/// What a search looks for, besides its text.
#[derive(Debug, Clone, Copy, Default)]
pub struct SearchFilter {
    /// Only this resource's tables and columns.
    pub resource_id: Option<ResourceId>,
    /// Only tables, or only columns.
    pub kind: Option<SearchHitKind>,
}

/// Where a search hit would be after `after`: `(rank, name, table_id, position)`.
pub type SearchKey = (i32, String, TableId, i32);

/// Tables and columns of `tenant` whose name or comment contains `q` (case-insensitive), best
/// first: an exact name (rank 0), then a name containing `q` (1), then a comment containing it
/// (2); within a rank by `(name, table_id, position)`; after the keyset position `after`.
///
/// `ilike '%q%'` is what the `pg_trgm` GIN indexes on names and comments serve (for a `q` of
/// three characters or more), so the candidates come from the indexes, not a scan of every
/// column.
pub async fn search(
    db: impl PgExecutor<'_>,
    tenant: &TenantId,
    q: &str,
    filter: SearchFilter,
    after: Option<SearchKey>,
    limit: i64,
) -> Result<Vec<SearchHit>, sqlx::Error> {
    let pattern = format!("%{}%", escape_like(q));
    let (after_rank, after_name, after_table, after_position) = match after {
        Some((rank, name, table, position)) => {
            (Some(rank), Some(name), Some(table), Some(position))
        }
        None => (None, None, None, None),
    };
    sqlx::query_as(
        "with hits as (
             select 'table' as kind, t.name, t.id as table_id, 0 as position, t.resource_id,
                    t.database, t.schema_name as schema, t.name as table, t.kind as table_kind,
                    null::text as data_type, t.comment
             from catalog_tables t
             where t.tenant_id = $1 and (t.name ilike $2 or t.comment ilike $2)
               and ($7::uuid is null or t.resource_id = $7)
               and ($8::text is null or $8 = 'table')
             union all
             select 'column', c.name, c.table_id, c.position, t.resource_id, t.database,
                    t.schema_name, t.name, t.kind, c.data_type, c.comment
             from catalog_columns c join catalog_tables t on t.id = c.table_id
             where c.tenant_id = $1 and (c.name ilike $2 or c.comment ilike $2)
               and ($7::uuid is null or t.resource_id = $7)
               and ($8::text is null or $8 = 'column')
         ), ranked as (
             select h.*, case when lower(h.name) = lower($9) then 0
                              when h.name ilike $2 then 1
                              else 2 end as rank
             from hits h
         )
         select k.kind, k.name, k.table_id, k.position, k.resource_id, r.name as resource_name,
                k.database, k.schema, k.table, k.table_kind, k.data_type, k.comment, k.rank
         from ranked k join resources r on r.id = k.resource_id
         where $3::int is null or (k.rank, k.name, k.table_id, k.position) > ($3, $4, $5, $6)
         order by k.rank, k.name, k.table_id, k.position
         limit $10",
    )
    .bind(tenant)
    .bind(pattern)
    .bind(after_rank)
    .bind(after_name)
    .bind(after_table)
    .bind(after_position)
    .bind(filter.resource_id)
    .bind(filter.kind)
    .bind(q)
    .bind(limit)
    .fetch_all(db)
    .await
}
