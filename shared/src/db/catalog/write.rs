//! The worker's catalog writer: a [`Snapshot`] diffed against what is stored, table by table
//! by fingerprint, and only what changed written, with its change history, inside the fenced
//! job transaction. Rows travel through the bulk-insert engine in `super::bulk`.

use std::collections::{HashMap, HashSet};

use serde::Deserialize;
use serde_json::json;
use sqlx::PgConnection;
use sqlx::types::Json;
use uuid::Uuid;

use super::bulk::{BulkInsert, PendingInserts, Target};
use crate::catalog::{
    ChangeKind, ColumnInfo, SchemaInfo, SequenceInfo, Snapshot, TableChange, TableInfo, TypeInfo,
    diff_schema_objects, diff_table,
};
use crate::domain::SyncStats;
use crate::ids::{JobId, ResourceId, SchemaId, TableId, TenantId};
use crate::scan_options::{Depth, Filters, ScanOptions};

/// The scope a snapshot was read under: the resource's scan options, compiled, and what its
/// `databases` selects by. The writer compares it with the scope the catalog was last written
/// with (`resources.catalog_scope`): a change is recorded once as `scope_changed`, and what
/// left or entered the scope because of it is not reported as removed or added.
#[derive(Clone, Copy)]
pub struct Scope<'a> {
    /// The options the scan ran with.
    pub options: &'a ScanOptions,
    /// `options`' patterns, compiled (the worker's cached ones).
    pub filters: &'a Filters,
    /// The resource's own database: what `databases: "resource"` selects.
    pub resource_database: &'a str,
    /// MySQL/MariaDB: `databases` selects schemas, a database being a schema there (and the
    /// snapshot's one database is the resource's).
    pub databases_are_schemas: bool,
}

impl Scope<'_> {
    fn covers_schema(&self, database: &str, schema: &str) -> bool {
        let selected = if self.databases_are_schemas {
            schema
        } else {
            database
        };
        self.options
            .selects_database(selected, self.resource_database)
            && self.filters.schema_included(schema)
    }

    fn covers_table(&self, database: &str, schema: &str, name: &str) -> bool {
        self.options.depth >= Depth::Tables
            && self.covers_schema(database, schema)
            && self.filters.table_included(schema, name)
    }
}

/// A scope change this sync found: the scope the catalog was last written with, and the
/// scope of this scan.
struct ScopeShift<'a> {
    before_options: ScanOptions,
    before_filters: Filters,
    after: Scope<'a>,
}

impl<'a> ScopeShift<'a> {
    /// The change from the `stored` options to `after`'s. `None` when a stored value no longer
    /// parses or compiles (it was written from parsed options): that costs only the
    /// distinction, and what vanished is then reported as removed.
    fn from_stored(stored: &serde_json::Value, after: Scope<'a>) -> Option<Self> {
        let before_options = ScanOptions::try_from(stored.clone()).ok()?;
        let before_filters = before_options.compile().ok()?;
        Some(Self {
            before_options,
            before_filters,
            after,
        })
    }

    fn before(&self) -> Scope<'_> {
        Scope {
            options: &self.before_options,
            filters: &self.before_filters,
            ..self.after
        }
    }

    /// A new table the old scope did not select: it entered the scope, it was not created.
    fn entered(&self, database: &str, table: &TableInfo) -> bool {
        !self
            .before()
            .covers_table(database, &table.schema, &table.name)
    }

    /// A vanished table the new scope does not select: it left the scope, it was not dropped.
    fn left(&self, gone: &StoredTable) -> bool {
        !self
            .after
            .covers_table(&gone.database, &gone.schema, &gone.name)
    }

    /// Whether a change of this kind can be the depth's doing rather than the source's:
    /// going below depth 3 drops every column, constraint, index, type and sequence; coming
    /// back to it brings them all.
    fn depth_explains(&self, kind: ChangeKind) -> bool {
        use ChangeKind::*;
        let (before, after) = (self.before_options.depth, self.after.options.depth);
        let everything = Depth::Everything;
        match kind {
            ColumnAdded | ConstraintAdded | IndexAdded | TypeAdded | SequenceAdded => {
                before < everything && after == everything
            }
            ColumnRemoved | ConstraintRemoved | IndexRemoved | TypeRemoved | SequenceRemoved => {
                before == everything && after < everything
            }
            _ => false,
        }
    }
}

/// A stored schema as the first statement returns it: a JSON array in this field order.
#[derive(Deserialize)]
struct StoredSchema {
    database: String,
    name: String,
    owner: Option<String>,
    comment: Option<String>,
    types: Vec<TypeInfo>,
    sequences: Vec<SequenceInfo>,
}

/// What the first statement reads: the stored catalog of the resource.
#[derive(sqlx::FromRow)]
struct StoredCatalog {
    schemas: Json<Vec<StoredSchema>>,
    tables: Json<Vec<StoredTable>>,
    /// Whether the resource has retired table ids (none: no need to look new names up).
    any_retired: bool,
    /// The options the catalog was last written with (`resources.catalog_scope`): a JSON
    /// value, parsed only when it differs from this scan's (stored options need not parse
    /// for the write to go on).
    scope: Option<Json<serde_json::Value>>,
}

/// A stored table's identity and fingerprint as the first statement returns it: a JSON array
/// in this field order.
#[derive(Deserialize)]
struct StoredTable {
    id: TableId,
    database: String,
    schema: String,
    name: String,
    fingerprint: String,
    kind: String,
    row_estimate: Option<i64>,
    estimated_bytes: Option<i64>,
    source_oid: Option<i64>,
}

/// The statistics of tables whose definition is unchanged but whose statistics moved, as
/// `unnest` arrays for [`update_statistics`]. The source oid rides along: a table dropped and
/// re-created alike keeps its definition but not its oid, which a later rename is matched by.
#[derive(Default)]
struct StatisticsUpdate {
    ids: Vec<Uuid>,
    row_estimates: Vec<Option<i64>>,
    estimated_bytes: Vec<Option<i64>>,
    source_oids: Vec<Option<i64>>,
}

impl StatisticsUpdate {
    /// Queues `table`'s statistics if they differ from the stored ones.
    fn push_if_moved(&mut self, stored: &StoredTable, table: &TableInfo) {
        if (
            stored.row_estimate,
            stored.estimated_bytes,
            stored.source_oid,
        ) != (table.row_estimate, table.estimated_bytes, table.source_oid)
        {
            self.ids.push(stored.id.uuid());
            self.row_estimates.push(table.row_estimate);
            self.estimated_bytes.push(table.estimated_bytes);
            self.source_oids.push(table.source_oid);
        }
    }
}

/// Where a table sits in its resource: the stored catalog's unique key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct TableKey<'a> {
    database: &'a str,
    schema: &'a str,
    name: &'a str,
}

impl StoredTable {
    fn key(&self) -> TableKey<'_> {
        TableKey {
            database: &self.database,
            schema: &self.schema,
            name: &self.name,
        }
    }
}

/// How a scanned table was matched to the stored catalog.
enum Match<'s> {
    /// Stored under the same (database, schema, name).
    Key(&'s StoredTable),
    /// A stored table whose name vanished, with the same source oid: renamed in place.
    Renamed(&'s StoredTable),
    /// Not stored: a new table.
    New,
}

/// Pairs each scanned table with the stored one it is, taking those out of `stored` (what is
/// left there vanished). Matched by name, unless the stored table's oid is scanned under a
/// free name (renamed away, and a new table took the name); then a new name takes a vanished
/// name's table if they share the source oid and kind (a rename in place, PostgreSQL only). A
/// rename onto a name that was stored (a swap, a chain of renames) is matched by name: the
/// rename statement must never move a table onto a name another row still holds.
fn match_tables<'a>(
    scanned: &[(&'a str, &'a TableInfo)],
    stored: &mut HashMap<TableKey<'a>, &'a StoredTable>,
) -> Vec<Match<'a>> {
    fn key_of<'a>(&(database, table): &(&'a str, &'a TableInfo)) -> TableKey<'a> {
        TableKey {
            database,
            schema: &table.schema,
            name: &table.name,
        }
    }
    let occupied: HashSet<TableKey> = stored.keys().copied().collect();
    let scanned_at: HashMap<(&str, i64), TableKey> = scanned
        .iter()
        .filter_map(|t| Some(((t.0, t.1.source_oid?), key_of(t))))
        .collect();
    let renamed_away =
        |old: &StoredTable, table: &TableInfo| match (old.source_oid, table.source_oid) {
            (Some(was), Some(now)) if was != now => scanned_at
                .get(&(old.database.as_str(), was))
                .is_some_and(|key| !occupied.contains(key)),
            _ => false,
        };
    let mut matches: Vec<Match> = scanned
        .iter()
        .map(|t| {
            let key = key_of(t);
            match stored.get(&key).copied() {
                Some(old) if !renamed_away(old, t.1) => {
                    stored.remove(&key);
                    Match::Key(old)
                }
                _ => Match::New,
            }
        })
        .collect();
    let mut vanished_by_oid: HashMap<(&str, i64), &StoredTable> = stored
        .values()
        .filter_map(|t| Some(((t.database.as_str(), t.source_oid?), *t)))
        .collect();
    for (m, t) in matches.iter_mut().zip(scanned) {
        let Some(oid) = t.1.source_oid else {
            continue;
        };
        if matches!(m, Match::New)
            && !occupied.contains(&key_of(t))
            && let Some(old) = vanished_by_oid.remove(&(t.0, oid))
            && old.kind == t.1.kind
        {
            stored.remove(&old.key());
            *m = Match::Renamed(old);
        }
    }
    matches
}

/// Compares this scan's scope with the one the catalog was last written with (`stored`):
/// where they differ, one `scope_changed` entry and the shift that tells what left or entered
/// the scope; the first sync (nothing stored) records none. Stores the scope when it moved
/// (one statement). Returns the rows written, the shift and the change entry, if any.
async fn record_scope<'a>(
    tx: &mut PgConnection,
    resource_id: ResourceId,
    stored: Option<serde_json::Value>,
    scope: Scope<'a>,
) -> Result<(u64, Option<ScopeShift<'a>>, Vec<ChangeRow>), sqlx::Error> {
    let now = serde_json::Value::from(scope.options.clone());
    if stored.as_ref() == Some(&now) {
        return Ok((0, None, Vec::new()));
    }
    let written = sqlx::query("update resources set catalog_scope = $2 where id = $1")
        .bind(resource_id)
        .bind(Json(scope.options))
        .execute(&mut *tx)
        .await?
        .rows_affected();
    let Some(before) = stored else {
        return Ok((written, None, Vec::new()));
    };
    let shift = ScopeShift::from_stored(&before, scope);
    let change = ChangeRow {
        // The resource's own change: no database, no schema.
        database: String::new(),
        schema: String::new(),
        table: None,
        change: TableChange::new(ChangeKind::ScopeChanged, None, Some(before), Some(now)),
    };
    Ok((written, shift, vec![change]))
}

/// The ids of retired tables (`catalog_retired_tables`) by the name they had, for the new
/// tables of a sync: one statement, only when there are new tables and retired ids.
async fn retired_ids(
    tx: &mut PgConnection,
    resource_id: ResourceId,
    new: &[(&str, &TableInfo)],
) -> Result<HashMap<(String, String, String), TableId>, sqlx::Error> {
    let dbs: Vec<&str> = new.iter().map(|(db, _)| *db).collect();
    let schemas: Vec<&str> = new.iter().map(|(_, t)| t.schema.as_str()).collect();
    let names: Vec<&str> = new.iter().map(|(_, t)| t.name.as_str()).collect();
    let rows: Vec<(String, String, String, TableId)> = sqlx::query_as(
        "select r.database, r.schema_name, r.name, r.id
         from catalog_retired_tables r
              join unnest($2::text[], $3::text[], $4::text[]) as n (db, schema_name, name)
                on (r.database, r.schema_name, r.name) = (n.db, n.schema_name, n.name)
         where r.resource_id = $1
           and not exists (select from catalog_tables t where t.id = r.id)",
    )
    .bind(resource_id)
    .bind(&dbs)
    .bind(&schemas)
    .bind(&names)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(db, schema, name, id)| ((db, schema, name), id))
        .collect())
}

/// A scanned table to write, under the id it is (or will be) stored with.
struct TableWrite<'a> {
    id: TableId,
    database: &'a str,
    table: &'a TableInfo,
    fingerprint: String,
}

/// A stored definition read back to diff against.
#[derive(sqlx::FromRow)]
struct DefinitionRow {
    id: TableId,
    #[sqlx(flatten)]
    table: TableInfo,
}

/// A stored column read back to diff against.
#[derive(sqlx::FromRow)]
struct ColumnRow {
    table_id: TableId,
    #[sqlx(flatten)]
    column: ColumnInfo,
}

/// Whose catalog is written, and by which job: what every row of the write carries.
#[derive(Clone, Copy)]
struct Owner<'a> {
    tenant: &'a TenantId,
    resource_id: ResourceId,
    job_id: JobId,
}

/// One change-history entry, before it is written.
struct ChangeRow {
    database: String,
    schema: String,
    table: Option<String>,
    change: TableChange,
}

impl ChangeRow {
    fn of_table(database: &str, table: &TableInfo, change: TableChange) -> Self {
        Self {
            database: database.to_owned(),
            schema: table.schema.clone(),
            table: Some(table.name.clone()),
            change,
        }
    }
}

/// Writes a snapshot of one resource: only tables whose fingerprint moved are rewritten, and
/// what disappeared from the source is removed. Tables keep their ids across renames
/// (PostgreSQL) and take their old ids back when they reappear; a change of `scope` since
/// the last write is recorded once. A fixed number of statements, whatever the table count
/// (arrays through `unnest`). Run inside the fenced job transaction. Returns the
/// job's stats.
#[tracing::instrument(skip_all, fields(%resource_id))]
pub async fn write_snapshot(
    tx: &mut PgConnection,
    tenant: &TenantId,
    resource_id: ResourceId,
    job_id: JobId,
    snapshot: &Snapshot,
    scope: Scope<'_>,
) -> Result<SyncStats, sqlx::Error> {
    let owner = Owner {
        tenant,
        resource_id,
        job_id,
    };
    let mut stats = SyncStats {
        databases: snapshot.databases.len() as u64,
        schemas: snapshot
            .databases
            .iter()
            .map(|d| d.schemas.len() as u64)
            .sum(),
        source_statements: snapshot.statements,
        ..SyncStats::default()
    };
    // Catalog rows inserted, updated or deleted: 0 for an unchanged resync.
    let mut rows_written = 0;
    // What is stored now (schemas, tables, whether ids are retired, the scope), in one round
    // trip.
    let StoredCatalog {
        schemas: stored_schemas,
        tables: stored_tables,
        any_retired,
        scope: stored_scope,
    } = sqlx::query_as(
        "select (select coalesce(json_agg(json_build_array(database, name, owner, comment,
                                                               types, sequences)), '[]')
                     from catalog_schemas where resource_id = $1) as schemas,
                    (select coalesce(json_agg(json_build_array(id, database, schema_name, name,
                                                               fingerprint, kind, row_estimate,
                                                               estimated_bytes, source_oid)), '[]')
                     from catalog_tables where resource_id = $1) as tables,
                    exists (select from catalog_retired_tables where resource_id = $1)
                        as any_retired,
                    (select catalog_scope from resources where id = $1) as scope",
    )
    .bind(resource_id)
    .fetch_one(&mut *tx)
    .await?;
    let (scope_rows, shift, mut changes) =
        record_scope(tx, resource_id, stored_scope.map(|json| json.0), scope).await?;
    rows_written += scope_rows;
    let (schema_rows, schema_changes) =
        write_schemas(tx, owner, snapshot, stored_schemas.0, shift.as_ref()).await?;
    rows_written += schema_rows;
    changes.extend(schema_changes);

    let stored_tables = stored_tables.0;
    let mut stored: HashMap<TableKey, &StoredTable> =
        stored_tables.iter().map(|t| (t.key(), t)).collect();
    let scanned: Vec<(&str, &TableInfo)> = snapshot
        .databases
        .iter()
        .flat_map(|d| d.tables.iter().map(move |t| (d.name.as_str(), t)))
        .collect();
    let matches = match_tables(&scanned, &mut stored);
    // A new table takes back the id its name had when it left, if no live table holds it.
    let new: Vec<(&str, &TableInfo)> = matches
        .iter()
        .zip(&scanned)
        .filter(|(m, _)| matches!(m, Match::New))
        .map(|(_, t)| *t)
        .collect();
    let retired = if any_retired && !new.is_empty() {
        retired_ids(tx, resource_id, &new).await?
    } else {
        HashMap::new()
    };
    // Ids held by a table: stored ones, and retired ones as they are taken back.
    let mut taken: HashSet<TableId> = stored_tables.iter().map(|t| t.id).collect();

    let mut rewrite: Vec<TableWrite> = Vec::new();
    let mut changed_ids: Vec<Uuid> = Vec::new();
    let mut reused_ids: Vec<Uuid> = Vec::new();
    let mut renamed = Renames::default();
    let mut statistics = StatisticsUpdate::default();
    for (m, (database, table)) in matches.into_iter().zip(scanned) {
        stats.tables += 1;
        stats.columns += table.columns.len() as u64;
        let fingerprint = table.fingerprint();
        let id = match m {
            Match::Key(old) if old.fingerprint == fingerprint => {
                stats.tables_unchanged += 1;
                statistics.push_if_moved(old, table);
                continue;
            }
            Match::Key(old) => {
                stats.tables_changed += 1;
                changed_ids.push(old.id.uuid());
                old.id
            }
            Match::Renamed(old) => {
                stats.tables_changed += 1;
                changed_ids.push(old.id.uuid());
                renamed.push(old.id, table);
                let name = |schema: &str, name: &str| json!({ "schema": schema, "name": name });
                let change = TableChange::new(
                    ChangeKind::TableRenamed,
                    None,
                    Some(name(&old.schema, &old.name)),
                    Some(name(&table.schema, &table.name)),
                );
                changes.push(ChangeRow::of_table(database, table, change));
                old.id
            }
            Match::New => {
                stats.tables_added += 1;
                if !shift.as_ref().is_some_and(|s| s.entered(database, table)) {
                    let after = json!({ "kind": table.kind });
                    let change = TableChange::new(ChangeKind::TableAdded, None, None, Some(after));
                    changes.push(ChangeRow::of_table(database, table, change));
                }
                let key = (
                    database.to_owned(),
                    table.schema.clone(),
                    table.name.clone(),
                );
                match retired.get(&key) {
                    Some(id) if taken.insert(*id) => {
                        reused_ids.push(id.uuid());
                        *id
                    }
                    _ => TableId::new_v7(),
                }
            }
        };
        rewrite.push(TableWrite {
            id,
            database,
            table,
            fingerprint,
        });
    }

    // Only tables whose fingerprint moved (or that were renamed) are read back, to say what
    // moved.
    if !changed_ids.is_empty() {
        let before = read_definitions(tx, &changed_ids).await?;
        for write in &rewrite {
            if let Some(old) = before.get(&write.id) {
                changes.extend(
                    diff_table(old, write.table)
                        .into_iter()
                        .map(|change| ChangeRow::of_table(write.database, write.table, change)),
                );
            }
        }
    }

    let removed: Vec<Uuid> = stored.values().map(|t| t.id.uuid()).collect();
    stats.tables_removed = removed.len() as u64;
    for gone in stored
        .into_values()
        .filter(|gone| !shift.as_ref().is_some_and(|s| s.left(gone)))
    {
        let before = json!({ "kind": gone.kind });
        changes.push(ChangeRow {
            database: gone.database.clone(),
            schema: gone.schema.clone(),
            table: Some(gone.name.clone()),
            change: TableChange::new(ChangeKind::TableRemoved, None, Some(before), None),
        });
    }
    rows_written += retire_and_rename(tx, resource_id, &removed, &reused_ids, &renamed).await?;
    if !changed_ids.is_empty() {
        let done = sqlx::query("delete from catalog_columns where table_id = any($1)")
            .bind(&changed_ids)
            .execute(&mut *tx)
            .await?;
        rows_written += done.rows_affected();
    }
    // New tables go in with COPY; changed ones need the upsert to keep their ids.
    let changed: HashSet<Uuid> = changed_ids.iter().copied().collect();
    let (updated, added): (Vec<_>, Vec<_>) = rewrite
        .into_iter()
        .partition(|write| changed.contains(&write.id.uuid()));
    for batch in batches(&updated, |write| write.table.columns.len().max(1)) {
        rows_written += upsert_tables(tx, owner, batch).await?;
    }
    // Changed and new tables carry their statistics in their rows; unchanged ones get theirs
    // here, without touching their definition.
    stats.tables_statistics_updated = update_statistics(tx, &statistics).await?;
    // Small inserts wait in `pending` and go out together, in one statement at the end.
    let mut pending = PendingInserts::default();
    rows_written += copy_tables(tx, &mut pending, owner, &added).await?;
    rows_written += insert_columns(tx, &mut pending, owner.tenant, &updated).await?;
    rows_written += insert_columns(tx, &mut pending, owner.tenant, &added).await?;
    if let Some(shift) = &shift {
        changes.retain(|c| !shift.depth_explains(c.change.kind));
    }
    let changes = insert_changes(tx, &mut pending, owner, &changes).await?;
    pending.execute(tx).await?;
    tracing::debug!(
        rows_written,
        changes,
        statistics_updated = stats.tables_statistics_updated,
        "catalog written"
    );
    Ok(stats)
}

/// Renamed tables' new (schema, name), as `unnest` arrays for [`retire_and_rename`].
#[derive(Default)]
struct Renames<'a> {
    ids: Vec<Uuid>,
    schemas: Vec<&'a str>,
    names: Vec<&'a str>,
}

impl<'a> Renames<'a> {
    fn push(&mut self, id: TableId, table: &'a TableInfo) {
        self.ids.push(id.uuid());
        self.schemas.push(&table.schema);
        self.names.push(&table.name);
    }
}

/// One statement (none when there is nothing to do): deletes the `removed` tables and keeps
/// their ids as retired under their names, forgets the retired ids `reused` by new tables,
/// and moves `renamed` tables to their new names (so the upsert, keyed by name, finds them).
/// A rename's new name was free (a stored one would have matched by name), so no row
/// conflicts with another inside the statement. Returns the catalog rows deleted or renamed.
async fn retire_and_rename(
    tx: &mut PgConnection,
    resource_id: ResourceId,
    removed: &[Uuid],
    reused: &[Uuid],
    renamed: &Renames<'_>,
) -> Result<u64, sqlx::Error> {
    if removed.is_empty() && reused.is_empty() && renamed.ids.is_empty() {
        return Ok(0);
    }
    let (written,): (i64,) = sqlx::query_as(
        "with gone as (
             delete from catalog_tables where id = any($2)
             returning tenant_id, database, schema_name, name, id),
         retired as (
             insert into catalog_retired_tables (resource_id, tenant_id, database, schema_name,
                                                 name, id)
             select $1, tenant_id, database, schema_name, name, id from gone
             on conflict (resource_id, database, schema_name, name)
             do update set id = excluded.id, retired_at = now()),
         reused as (
             delete from catalog_retired_tables where resource_id = $1 and id = any($3)),
         renamed as (
             update catalog_tables t set schema_name = r.schema_name, name = r.name
             from unnest($4::uuid[], $5::text[], $6::text[]) as r (id, schema_name, name)
             where t.id = r.id
             returning t.id)
         select (select count(*) from gone) + (select count(*) from renamed)",
    )
    .bind(resource_id)
    .bind(removed)
    .bind(reused)
    .bind(&renamed.ids)
    .bind(&renamed.schemas)
    .bind(&renamed.names)
    .fetch_one(&mut *tx)
    .await?;
    Ok(written as u64)
}

/// Forgets at most `limit` retired table ids older than `retention` (the prune duty): a table
/// gone longer than that gets a new id when it comes back. Returns the ids forgotten.
pub async fn prune_retired_tables(
    db: impl sqlx::PgExecutor<'_>,
    retention: std::time::Duration,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "delete from catalog_retired_tables where ctid in (
             select ctid from catalog_retired_tables
             where retired_at < now() - $1 * interval '1 millisecond'
             limit $2)",
    )
    .bind(retention.as_millis() as i64)
    .bind(limit)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Refreshes the row estimates and sizes of tables whose definition did not change, in one
/// statement (none when no statistic moved). Statistics are not part of the definition: the
/// fingerprint, `last_job_id` and `last_changed_at` stay, and no change history is written.
/// Returns the tables updated.
async fn update_statistics(
    tx: &mut PgConnection,
    update: &StatisticsUpdate,
) -> Result<u64, sqlx::Error> {
    if update.ids.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query(
        "update catalog_tables t
         set row_estimate = s.row_estimate, estimated_bytes = s.estimated_bytes,
             source_oid = s.source_oid
         from unnest($1::uuid[], $2::int8[], $3::int8[], $4::int8[])
              as s (id, row_estimate, estimated_bytes, source_oid)
         where t.id = s.id
           and (t.row_estimate, t.estimated_bytes, t.source_oid)
               is distinct from (s.row_estimate, s.estimated_bytes, s.source_oid)",
    )
    .bind(&update.ids)
    .bind(&update.row_estimates)
    .bind(&update.estimated_bytes)
    .bind(&update.source_oids)
    .execute(&mut *tx)
    .await?;
    Ok(done.rows_affected())
}

/// Rows (columns, or tables without any) per write statement. Each statement's arrays and
/// encoded arguments live in the worker's memory at once, so a 20,000-table first sync is
/// written in several bounded statements rather than one of 300,000 columns.
const ROWS_PER_STATEMENT: usize = 40_000;

/// Splits `items` into consecutive runs of at most [`ROWS_PER_STATEMENT`] rows by `rows`
/// (a run holds at least one item, however many rows it has).
fn batches<T>(items: &[T], rows: impl Fn(&T) -> usize) -> Vec<&[T]> {
    let mut out = Vec::new();
    let (mut start, mut count) = (0, 0);
    for (i, item) in items.iter().enumerate() {
        let n = rows(item);
        if count > 0 && count + n > ROWS_PER_STATEMENT {
            out.push(&items[start..i]);
            (start, count) = (i, 0);
        }
        count += n;
    }
    if start < items.len() {
        out.push(&items[start..]);
    }
    out
}

/// The stored definitions of `ids`, as [`TableInfo`]s to diff against: two statements.
async fn read_definitions(
    tx: &mut PgConnection,
    ids: &[Uuid],
) -> Result<HashMap<TableId, TableInfo>, sqlx::Error> {
    let tables: Vec<DefinitionRow> = sqlx::query_as(
        "select id, schema_name as schema, name, kind, owner, comment, row_estimate, estimated_bytes,
                view_definition, details, constraints, indexes, source_oid
         from catalog_tables where id = any($1)",
    )
    .bind(ids)
    .fetch_all(&mut *tx)
    .await?;
    let mut out: HashMap<TableId, TableInfo> =
        tables.into_iter().map(|row| (row.id, row.table)).collect();
    let columns: Vec<ColumnRow> = sqlx::query_as(
        "select table_id, position, name, data_type, nullable, default_value, comment, details
         from catalog_columns where table_id = any($1) order by table_id, position",
    )
    .bind(ids)
    .fetch_all(&mut *tx)
    .await?;
    for row in columns {
        if let Some(table) = out.get_mut(&row.table_id) {
            table.columns.push(row.column);
        }
    }
    Ok(out)
}

const CHANGE_COLUMNS: Target = Target {
    table: "catalog_changes",
    columns: &[
        ("id", "uuid"),
        ("tenant_id", "text"),
        ("resource_id", "uuid"),
        ("job_id", "uuid"),
        ("database", "text"),
        ("schema_name", "text"),
        ("table_name", "text"),
        ("kind", "text"),
        ("object_name", "text"),
        ("details", "jsonb"),
    ],
};

const TABLE_COLUMNS: Target = Target {
    table: "catalog_tables",
    columns: &[
        ("id", "uuid"),
        ("tenant_id", "text"),
        ("resource_id", "uuid"),
        ("database", "text"),
        ("schema_name", "text"),
        ("name", "text"),
        ("kind", "text"),
        ("owner", "text"),
        ("comment", "text"),
        ("row_estimate", "int8"),
        ("estimated_bytes", "int8"),
        ("view_definition", "text"),
        ("details", "jsonb"),
        ("constraints", "jsonb"),
        ("indexes", "jsonb"),
        ("fingerprint", "text"),
        ("last_job_id", "uuid"),
        ("source_oid", "int8"),
    ],
};

const COLUMN_COLUMNS: Target = Target {
    table: "catalog_columns",
    columns: &[
        ("table_id", "uuid"),
        ("tenant_id", "text"),
        ("position", "int4"),
        ("name", "text"),
        ("data_type", "text"),
        ("nullable", "bool"),
        ("default_value", "text"),
        ("comment", "text"),
        ("details", "jsonb"),
    ],
};

async fn insert_changes(
    tx: &mut PgConnection,
    pending: &mut PendingInserts,
    owner: Owner<'_>,
    changes: &[ChangeRow],
) -> Result<u64, sqlx::Error> {
    if changes.is_empty() {
        return Ok(0);
    }
    let (resource_id, job_id) = (owner.resource_id.to_string(), owner.job_id.to_string());
    let mut copy = BulkInsert::start(tx, pending, CHANGE_COLUMNS, changes.len()).await?;
    for c in changes {
        let id = Uuid::now_v7().to_string();
        let details = c.change.details.to_string();
        copy.row(&[
            Some(&id),
            Some(owner.tenant.as_str()),
            Some(&resource_id),
            Some(&job_id),
            Some(&c.database),
            Some(&c.schema),
            c.table.as_deref(),
            Some(c.change.kind.as_str()),
            c.change.object_name.as_deref(),
            Some(&details),
        ])
        .await?;
    }
    copy.finish(pending).await
}

/// New tables, with COPY: nothing to conflict with, since the fenced job is the resource's
/// only writer and they were not stored.
async fn copy_tables(
    tx: &mut PgConnection,
    pending: &mut PendingInserts,
    owner: Owner<'_>,
    rows: &[TableWrite<'_>],
) -> Result<u64, sqlx::Error> {
    if rows.is_empty() {
        return Ok(0);
    }
    let (resource_id, job_id) = (owner.resource_id.to_string(), owner.job_id.to_string());
    let mut copy = BulkInsert::start(tx, pending, TABLE_COLUMNS, rows.len()).await?;
    for TableWrite {
        id,
        database,
        table,
        fingerprint,
    } in rows
    {
        let id = id.to_string();
        let rows_estimate = table.row_estimate.map(|n| n.to_string());
        let bytes = table.estimated_bytes.map(|n| n.to_string());
        let oid = table.source_oid.map(|n| n.to_string());
        let details = table.details.to_string();
        let constraints = serde_json::to_string(&table.constraints).expect("json serializes");
        let indexes = serde_json::to_string(&table.indexes).expect("json serializes");
        copy.row(&[
            Some(&id),
            Some(owner.tenant.as_str()),
            Some(&resource_id),
            Some(database),
            Some(&table.schema),
            Some(&table.name),
            Some(&table.kind),
            table.owner.as_deref(),
            table.comment.as_deref(),
            rows_estimate.as_deref(),
            bytes.as_deref(),
            table.view_definition.as_deref(),
            Some(&details),
            Some(&constraints),
            Some(&indexes),
            Some(fingerprint),
            Some(&job_id),
            oid.as_deref(),
        ])
        .await?;
    }
    copy.finish(pending).await
}

async fn write_schemas(
    tx: &mut PgConnection,
    owner: Owner<'_>,
    snapshot: &Snapshot,
    stored: Vec<StoredSchema>,
    shift: Option<&ScopeShift<'_>>,
) -> Result<(u64, Vec<ChangeRow>), sqlx::Error> {
    let stored: HashMap<(String, String), SchemaInfo> = stored
        .into_iter()
        .map(|s| {
            let info = SchemaInfo {
                name: s.name.clone(),
                owner: s.owner,
                comment: s.comment,
                types: s.types,
                sequences: s.sequences,
            };
            ((s.database, s.name), info)
        })
        .collect();

    let mut seen = HashSet::new();
    let mut changes = Vec::new();
    let change = |database: &str, schema: &str, kind, before, after| ChangeRow {
        database: database.to_owned(),
        schema: schema.to_owned(),
        table: None,
        change: TableChange::new(kind, None, before, after),
    };
    let (mut dbs, mut names, mut owners, mut comments) = (vec![], vec![], vec![], vec![]);
    let (mut types, mut sequences) = (vec![], vec![]);
    for database in &snapshot.databases {
        for schema in &database.schemas {
            let key = (database.name.clone(), schema.name.clone());
            let old = stored.get(&key);
            match old {
                None if shift
                    .is_some_and(|s| !s.before().covers_schema(&database.name, &schema.name)) => {}
                None => changes.push(change(
                    &database.name,
                    &schema.name,
                    ChangeKind::SchemaAdded,
                    None,
                    Some(serde_json::json!(schema)),
                )),
                Some(old) => {
                    if old.comment != schema.comment {
                        changes.push(change(
                            &database.name,
                            &schema.name,
                            ChangeKind::CommentChanged,
                            Some(serde_json::json!(old.comment)),
                            Some(serde_json::json!(schema.comment)),
                        ));
                    }
                    changes.extend(diff_schema_objects(old, schema).into_iter().map(|change| {
                        ChangeRow {
                            database: database.name.clone(),
                            schema: schema.name.clone(),
                            table: None,
                            change,
                        }
                    }));
                }
            }
            if old != Some(schema) {
                dbs.push(database.name.as_str());
                names.push(schema.name.as_str());
                owners.push(schema.owner.as_deref());
                comments.push(schema.comment.as_deref());
                types.push(serde_json::to_value(&schema.types).expect("serializable"));
                sequences.push(serde_json::to_value(&schema.sequences).expect("serializable"));
            }
            seen.insert(key);
        }
    }
    let gone: Vec<(&str, &str)> = stored
        .keys()
        .filter(|key| !seen.contains(*key))
        .map(|(db, name)| (db.as_str(), name.as_str()))
        .collect();
    let mut written = 0;
    if !gone.is_empty() {
        for (db, name) in &gone {
            if shift.is_some_and(|s| !s.after.covers_schema(db, name)) {
                continue;
            }
            let before = serde_json::json!(stored[&(db.to_string(), name.to_string())]);
            changes.push(change(
                db,
                name,
                ChangeKind::SchemaRemoved,
                Some(before),
                None,
            ));
        }
        let (gone_dbs, gone_names): (Vec<&str>, Vec<&str>) = gone.into_iter().unzip();
        written += sqlx::query(
            "delete from catalog_schemas s using unnest($2::text[], $3::text[]) as g (db, name)
             where s.resource_id = $1 and s.database = g.db and s.name = g.name",
        )
        .bind(owner.resource_id)
        .bind(&gone_dbs)
        .bind(&gone_names)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    if !names.is_empty() {
        let ids: Vec<Uuid> = names.iter().map(|_| SchemaId::new_v7().uuid()).collect();
        written += sqlx::query(
            "insert into catalog_schemas (id, tenant_id, resource_id, database, name, owner, comment,
                                          types, sequences)
             select id, $1, $2, db, name, owner, comment, types, sequences
             from unnest($3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[],
                         $8::jsonb[], $9::jsonb[])
                  as s (id, db, name, owner, comment, types, sequences)
             on conflict (resource_id, database, name)
             do update set owner = excluded.owner, comment = excluded.comment,
                           types = excluded.types, sequences = excluded.sequences",
        )
        .bind(owner.tenant)
        .bind(owner.resource_id)
        .bind(&ids)
        .bind(&dbs)
        .bind(&names)
        .bind(&owners)
        .bind(&comments)
        .bind(&types)
        .bind(&sequences)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    Ok((written, changes))
}

/// Changed tables, over their stored rows (so they keep their ids): `unnest` arrays, one
/// statement a batch.
async fn upsert_tables(
    tx: &mut PgConnection,
    owner: Owner<'_>,
    rows: &[TableWrite<'_>],
) -> Result<u64, sqlx::Error> {
    let n = rows.len();
    let mut ids = Vec::with_capacity(n);
    let mut dbs = Vec::with_capacity(n);
    let mut schemas = Vec::with_capacity(n);
    let mut names = Vec::with_capacity(n);
    let mut kinds = Vec::with_capacity(n);
    let mut owners = Vec::with_capacity(n);
    let mut comments = Vec::with_capacity(n);
    let mut row_estimates = Vec::with_capacity(n);
    let mut sizes = Vec::with_capacity(n);
    let mut view_definitions = Vec::with_capacity(n);
    let mut details = Vec::with_capacity(n);
    let mut constraints = Vec::with_capacity(n);
    let mut indexes = Vec::with_capacity(n);
    let mut fingerprints = Vec::with_capacity(n);
    let mut oids = Vec::with_capacity(n);
    for TableWrite {
        id,
        database,
        table,
        fingerprint,
    } in rows
    {
        ids.push(id.uuid());
        dbs.push(*database);
        schemas.push(table.schema.as_str());
        names.push(table.name.as_str());
        kinds.push(table.kind.as_str());
        owners.push(table.owner.as_deref());
        comments.push(table.comment.as_deref());
        row_estimates.push(table.row_estimate);
        sizes.push(table.estimated_bytes);
        view_definitions.push(table.view_definition.as_deref());
        details.push(table.details.clone());
        constraints.push(serde_json::to_value(&table.constraints).expect("serializable"));
        indexes.push(serde_json::to_value(&table.indexes).expect("serializable"));
        fingerprints.push(fingerprint.as_str());
        oids.push(table.source_oid);
    }
    let done = sqlx::query(
        "insert into catalog_tables (id, tenant_id, resource_id, database, schema_name, name,
             kind, owner, comment, row_estimate, estimated_bytes, view_definition, details,
             constraints, indexes, fingerprint, last_job_id, source_oid)
         select t.id, $1, $2, t.db, t.schema_name, t.name, t.kind, t.owner, t.comment,
                t.row_estimate, t.estimated_bytes, t.view_definition, t.details, t.constraints,
                t.indexes, t.fingerprint, $3, t.source_oid
         from unnest($4::uuid[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[],
                     $10::text[], $11::int8[], $12::int8[], $13::text[], $14::jsonb[],
                     $15::jsonb[], $16::jsonb[], $17::text[], $18::int8[])
              as t (id, db, schema_name, name, kind, owner, comment, row_estimate, estimated_bytes,
                    view_definition, details, constraints, indexes, fingerprint, source_oid)
         on conflict (resource_id, database, schema_name, name) do update set
             kind = excluded.kind, owner = excluded.owner, comment = excluded.comment,
             row_estimate = excluded.row_estimate, estimated_bytes = excluded.estimated_bytes,
             view_definition = excluded.view_definition, details = excluded.details,
             constraints = excluded.constraints, indexes = excluded.indexes,
             fingerprint = excluded.fingerprint, last_job_id = excluded.last_job_id,
             source_oid = excluded.source_oid, last_changed_at = now()",
    )
    .bind(owner.tenant)
    .bind(owner.resource_id)
    .bind(owner.job_id)
    .bind(&ids)
    .bind(&dbs)
    .bind(&schemas)
    .bind(&names)
    .bind(&kinds)
    .bind(&owners)
    .bind(&comments)
    .bind(&row_estimates)
    .bind(&sizes)
    .bind(&view_definitions)
    .bind(&details)
    .bind(&constraints)
    .bind(&indexes)
    .bind(&fingerprints)
    .bind(&oids)
    .execute(&mut *tx)
    .await?;
    Ok(done.rows_affected())
}

async fn insert_columns(
    tx: &mut PgConnection,
    pending: &mut PendingInserts,
    tenant: &TenantId,
    rows: &[TableWrite<'_>],
) -> Result<u64, sqlx::Error> {
    let n = rows.iter().map(|write| write.table.columns.len()).sum();
    if n == 0 {
        return Ok(0);
    }
    let mut copy = BulkInsert::start(tx, pending, COLUMN_COLUMNS, n).await?;
    for write in rows {
        let id = write.id.to_string();
        for column in &write.table.columns {
            let details = column.details.to_string();
            let position = column.position.to_string();
            copy.row(&[
                Some(&id),
                Some(tenant.as_str()),
                Some(&position),
                Some(&column.name),
                Some(&column.data_type),
                Some(if column.nullable { "t" } else { "f" }),
                column.default_value.as_deref(),
                column.comment.as_deref(),
                Some(&details),
            ])
            .await?;
        }
    }
    copy.finish(pending).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(json: serde_json::Value) -> ScanOptions {
        ScanOptions::parse(&json).unwrap()
    }

    fn stored(name: &str, oid: i64) -> StoredTable {
        StoredTable {
            id: TableId::new_v7(),
            database: "db".into(),
            schema: "public".into(),
            name: name.into(),
            fingerprint: String::new(),
            kind: "table".into(),
            row_estimate: None,
            estimated_bytes: None,
            source_oid: Some(oid),
        }
    }

    fn scanned(name: &str, oid: i64) -> TableInfo {
        TableInfo {
            schema: "public".into(),
            name: name.into(),
            kind: "table".into(),
            owner: None,
            comment: None,
            row_estimate: None,
            estimated_bytes: None,
            view_definition: None,
            details: json!({}),
            columns: vec![],
            constraints: vec![],
            indexes: vec![],
            source_oid: Some(oid),
        }
    }

    /// How each scanned table matched: `key:<stored name>`, `renamed:<stored name>` or `new`;
    /// then the stored names left over (vanished).
    fn matched(stored_tables: &[StoredTable], tables: &[TableInfo]) -> (Vec<String>, Vec<String>) {
        let mut stored: HashMap<TableKey, &StoredTable> =
            stored_tables.iter().map(|t| (t.key(), t)).collect();
        let scanned: Vec<(&str, &TableInfo)> = tables.iter().map(|t| ("db", t)).collect();
        let matches = match_tables(&scanned, &mut stored)
            .into_iter()
            .map(|m| match m {
                Match::Key(old) => format!("key:{}", old.name),
                Match::Renamed(old) => format!("renamed:{}", old.name),
                Match::New => "new".into(),
            })
            .collect();
        let mut vanished: Vec<String> = stored.values().map(|t| t.name.clone()).collect();
        vanished.sort();
        (matches, vanished)
    }

    #[test]
    fn tables_match_by_name_then_by_oid_onto_free_names() {
        let old = [stored("a", 1), stored("b", 2)];
        // A rename, and a table dropped and re-created under its name.
        assert_eq!(
            matched(&old, &[scanned("a2", 1), scanned("b", 3)]),
            (vec!["renamed:a".into(), "key:b".into()], vec![])
        );
        // Renamed away, and a new table took the name: the oid follows the renamed one.
        assert_eq!(
            matched(&old, &[scanned("a", 5), scanned("c", 1), scanned("b", 2)]),
            (
                vec!["new".into(), "renamed:a".into(), "key:b".into()],
                vec![]
            )
        );
        // A swap stays matched by name: no rename onto a name a stored row holds.
        assert_eq!(
            matched(&old, &[scanned("a", 2), scanned("b", 1)]),
            (vec!["key:a".into(), "key:b".into()], vec![])
        );
        // A chain (a -> b, b -> c): `b` keeps its name's row, `c` takes b's by oid.
        assert_eq!(
            matched(&old, &[scanned("b", 1), scanned("c", 2)]),
            (vec!["new".into(), "renamed:b".into()], vec!["a".into()])
        );
        // No oid (MySQL/MariaDB): by name only.
        let mut mysql = scanned("a2", 1);
        mysql.source_oid = None;
        assert_eq!(
            matched(&old, &[mysql, scanned("b", 2)]),
            (vec!["new".into(), "key:b".into()], vec!["a".into()])
        );
        // Another kind under the vanished oid is not a rename.
        let mut view = scanned("a2", 1);
        view.kind = "view".into();
        assert_eq!(
            matched(&old, &[view, scanned("b", 2)]),
            (vec!["new".into(), "key:b".into()], vec!["a".into()])
        );
    }

    #[test]
    fn a_scope_covers_what_its_options_select() {
        let pg = options(json!({"databases": ["a", "b"], "exclude_schemas": ["x"],
                                "include_tables": ["t.*"]}));
        let filters = pg.compile().unwrap();
        let scope = Scope {
            options: &pg,
            filters: &filters,
            resource_database: "a",
            databases_are_schemas: false,
        };
        assert!(scope.covers_schema("b", "public"));
        assert!(!scope.covers_schema("c", "public"));
        assert!(!scope.covers_schema("a", "x"));
        assert!(scope.covers_table("a", "public", "t1"));
        assert!(!scope.covers_table("a", "public", "u1"));
        // MySQL: `databases` names schemas, the snapshot's database is the resource's.
        let my = options(json!({}));
        let filters = my.compile().unwrap();
        let scope = Scope {
            options: &my,
            filters: &filters,
            resource_database: "shop",
            databases_are_schemas: true,
        };
        assert!(scope.covers_schema("shop", "shop"));
        assert!(!scope.covers_schema("shop", "other"));
        // Depth 1 covers schemas, no tables.
        let shallow = options(json!({"depth": 1}));
        let filters = shallow.compile().unwrap();
        let scope = Scope {
            options: &shallow,
            filters: &filters,
            ..scope
        };
        assert!(!scope.covers_table("shop", "shop", "t"));
    }

    #[test]
    fn only_a_depth_crossing_three_explains_detail_changes() {
        fn shift<'a>(before: u8, after: &'a ScanOptions, filters: &'a Filters) -> ScopeShift<'a> {
            let after = Scope {
                options: after,
                filters,
                resource_database: "db",
                databases_are_schemas: false,
            };
            ScopeShift::from_stored(&json!({ "depth": before }), after).unwrap()
        }
        let (two, three) = (options(json!({"depth": 2})), options(json!({})));
        let (two_filters, three_filters) = (two.compile().unwrap(), three.compile().unwrap());
        let down = shift(3, &two, &two_filters);
        assert!(down.depth_explains(ChangeKind::ColumnRemoved));
        assert!(down.depth_explains(ChangeKind::TypeRemoved));
        assert!(!down.depth_explains(ChangeKind::ColumnAdded));
        assert!(!down.depth_explains(ChangeKind::TableRemoved));
        let up = shift(1, &three, &three_filters);
        assert!(up.depth_explains(ChangeKind::IndexAdded));
        assert!(!up.depth_explains(ChangeKind::IndexRemoved));
        let same = shift(3, &three, &three_filters);
        assert!(!same.depth_explains(ChangeKind::ColumnRemoved));
    }

    #[test]
    fn batches_are_bounded_and_cover_every_item_once() {
        let items = [30_000, 5_000, 5_000, 1, 90_000, 10];
        let runs = batches(&items, |n| *n);
        assert_eq!(
            runs,
            [
                &[30_000, 5_000, 5_000][..],
                &[1][..],
                &[90_000][..],
                &[10][..]
            ]
        );
        assert!(batches(&[] as &[usize], |n| *n).is_empty());
    }
}
