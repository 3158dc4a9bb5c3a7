//! The stored catalog: set-based writes of a [`Snapshot`] diffed against what is stored, and
//! the reads behind the catalog endpoints.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::catalog::{
    ChangeKind, ColumnInfo, SchemaInfo, Snapshot, TableChange, TableInfo, diff_table,
};

/// What a snapshot write changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteOutcome {
    pub schemas: u64,
    pub tables: u64,
    pub columns: u64,
    pub tables_added: u64,
    pub tables_changed: u64,
    pub tables_removed: u64,
    pub tables_unchanged: u64,
    /// Catalog rows inserted, updated or deleted: 0 for an unchanged resync.
    pub rows_written: u64,
    /// Change-history entries recorded (not counted in `rows_written`).
    pub changes: u64,
}

type TableKey = (String, String, String);

/// One change-history entry, before it is written.
struct ChangeRow {
    database: String,
    schema: String,
    table: Option<String>,
    change: TableChange,
}

/// Writes a snapshot of one resource: only tables whose fingerprint moved are rewritten, and
/// what disappeared from the source is removed. A fixed number of statements, whatever the
/// table count (arrays through `unnest`). Run inside the fenced job transaction.
#[tracing::instrument(skip_all, fields(%resource_id))]
pub async fn write_snapshot(
    tx: &mut PgConnection,
    tenant: &str,
    resource_id: Uuid,
    job_id: Uuid,
    snapshot: &Snapshot,
) -> Result<WriteOutcome, sqlx::Error> {
    let mut outcome = WriteOutcome::default();
    // What is stored now, schemas and tables, in one round trip.
    type StoredSchema = (String, String, Option<String>, Option<String>);
    type StoredTable = (Uuid, String, String, String, String, String);
    let (stored_schemas, stored): (Json<Vec<StoredSchema>>, Json<Vec<StoredTable>>) =
        sqlx::query_as(
            "select (select coalesce(json_agg(json_build_array(database, name, owner, comment)),
                                     '[]')
                     from catalog_schemas where resource_id = $1),
                    (select coalesce(json_agg(json_build_array(id, database, schema_name, name,
                                                               fingerprint, kind)), '[]')
                     from catalog_tables where resource_id = $1)",
        )
        .bind(resource_id)
        .fetch_one(&mut *tx)
        .await?;
    let (schema_rows, schema_changes) =
        write_schemas(tx, tenant, resource_id, snapshot, stored_schemas.0).await?;
    outcome.rows_written += schema_rows;
    let mut changes: Vec<ChangeRow> = schema_changes;

    let mut stored: HashMap<TableKey, (Uuid, String, String)> = stored
        .0
        .into_iter()
        .map(|(id, db, schema, name, fp, kind)| ((db, schema, name), (id, fp, kind)))
        .collect();

    let mut rewrite: Vec<(Uuid, &str, &TableInfo, String)> = Vec::new();
    let mut changed_ids: Vec<Uuid> = Vec::new();
    for database in &snapshot.databases {
        for table in &database.tables {
            outcome.tables += 1;
            outcome.columns += table.columns.len() as u64;
            let key = (
                database.name.clone(),
                table.schema.clone(),
                table.name.clone(),
            );
            let fingerprint = table.fingerprint();
            match stored.remove(&key) {
                Some((_, old, _)) if old == fingerprint => outcome.tables_unchanged += 1,
                Some((id, _, _)) => {
                    outcome.tables_changed += 1;
                    changed_ids.push(id);
                    rewrite.push((id, &database.name, table, fingerprint));
                }
                None => {
                    outcome.tables_added += 1;
                    changes.push(ChangeRow {
                        database: database.name.clone(),
                        schema: table.schema.clone(),
                        table: Some(table.name.clone()),
                        change: TableChange {
                            kind: ChangeKind::TableAdded,
                            object_name: None,
                            details: serde_json::json!({ "after": { "kind": table.kind } }),
                        },
                    });
                    rewrite.push((Uuid::now_v7(), &database.name, table, fingerprint));
                }
            }
        }
    }

    // Only tables whose fingerprint moved are read back, to say what moved.
    if !changed_ids.is_empty() {
        let before = read_definitions(tx, &changed_ids).await?;
        for (id, database, table, _) in &rewrite {
            if let Some(old) = before.get(id) {
                changes.extend(diff_table(old, table).into_iter().map(|change| ChangeRow {
                    database: database.to_string(),
                    schema: table.schema.clone(),
                    table: Some(table.name.clone()),
                    change,
                }));
            }
        }
    }

    let removed: Vec<Uuid> = stored.values().map(|(id, _, _)| *id).collect();
    outcome.tables_removed = removed.len() as u64;
    for ((database, schema, name), (_, _, kind)) in stored {
        changes.push(ChangeRow {
            database,
            schema,
            table: Some(name),
            change: TableChange {
                kind: ChangeKind::TableRemoved,
                object_name: None,
                details: serde_json::json!({ "before": { "kind": kind } }),
            },
        });
    }
    if !removed.is_empty() {
        let done = sqlx::query("delete from catalog_tables where id = any($1)")
            .bind(&removed)
            .execute(&mut *tx)
            .await?;
        outcome.rows_written += done.rows_affected();
    }
    if !changed_ids.is_empty() {
        let done = sqlx::query("delete from catalog_columns where table_id = any($1)")
            .bind(&changed_ids)
            .execute(&mut *tx)
            .await?;
        outcome.rows_written += done.rows_affected();
    }
    // New tables go in with COPY; changed ones need the upsert to keep their ids.
    let changed: HashSet<Uuid> = changed_ids.iter().copied().collect();
    let (updated, added): (Vec<_>, Vec<_>) = rewrite
        .into_iter()
        .partition(|(id, _, _, _)| changed.contains(id));
    for batch in batches(&updated, |(_, _, table, _)| table.columns.len().max(1)) {
        outcome.rows_written += upsert_tables(tx, tenant, resource_id, job_id, batch).await?;
    }
    // Small inserts wait in `pending` and go out together, in one statement at the end.
    let mut pending = PendingInserts::default();
    outcome.rows_written +=
        copy_tables(tx, &mut pending, tenant, resource_id, job_id, &added).await?;
    outcome.rows_written += insert_columns(tx, &mut pending, tenant, &updated).await?;
    outcome.rows_written += insert_columns(tx, &mut pending, tenant, &added).await?;
    outcome.changes =
        insert_changes(tx, &mut pending, tenant, resource_id, job_id, &changes).await?;
    pending.execute(tx).await?;
    Ok(outcome)
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
) -> Result<HashMap<Uuid, TableInfo>, sqlx::Error> {
    type Row = (
        Uuid,
        String,
        String,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        serde_json::Value,
        sqlx::types::Json<Vec<crate::catalog::ConstraintInfo>>,
        sqlx::types::Json<Vec<crate::catalog::IndexInfo>>,
    );
    let tables: Vec<Row> = sqlx::query_as(
        "select id, schema_name, name, kind, owner, comment, view_definition, details,
                constraints, indexes
         from catalog_tables where id = any($1)",
    )
    .bind(ids)
    .fetch_all(&mut *tx)
    .await?;
    let mut out: HashMap<Uuid, TableInfo> = tables
        .into_iter()
        .map(
            |(id, schema, name, kind, owner, comment, view, details, cons, idx)| {
                let table = TableInfo {
                    schema,
                    name,
                    kind,
                    owner,
                    comment,
                    row_estimate: None,
                    total_bytes: None,
                    view_definition: view,
                    details,
                    columns: Vec::new(),
                    constraints: cons.0,
                    indexes: idx.0,
                };
                (id, table)
            },
        )
        .collect();
    let columns: Vec<(Uuid, StoredColumn)> = sqlx::query_as(
        "select table_id, position, name, data_type, nullable, default_value, comment, details
         from catalog_columns where table_id = any($1) order by table_id, position",
    )
    .bind(ids)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|row: StoredColumnRow| (row.table_id, row.column))
    .collect();
    for (id, c) in columns {
        if let Some(table) = out.get_mut(&id) {
            table.columns.push(ColumnInfo {
                position: c.position,
                name: c.name,
                data_type: c.data_type,
                nullable: c.nullable,
                default_value: c.default_value,
                comment: c.comment,
                details: c.details,
            });
        }
    }
    Ok(out)
}

#[derive(sqlx::FromRow)]
struct StoredColumnRow {
    table_id: Uuid,
    #[sqlx(flatten)]
    column: StoredColumn,
}

async fn insert_changes(
    tx: &mut PgConnection,
    pending: &mut PendingInserts,
    tenant: &str,
    resource_id: Uuid,
    job_id: Uuid,
    changes: &[ChangeRow],
) -> Result<u64, sqlx::Error> {
    if changes.is_empty() {
        return Ok(0);
    }
    let (resource_id, job_id) = (resource_id.to_string(), job_id.to_string());
    let mut copy = BulkInsert::start(tx, pending, CHANGE_COLUMNS, changes.len()).await?;
    for c in changes {
        let id = Uuid::now_v7().to_string();
        let details = c.change.details.to_string();
        copy.row(&[
            Some(&id),
            Some(tenant),
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
    tenant: &str,
    resource_id: Uuid,
    job_id: Uuid,
    rows: &[(Uuid, &str, &TableInfo, String)],
) -> Result<u64, sqlx::Error> {
    if rows.is_empty() {
        return Ok(0);
    }
    let (resource_id, job_id) = (resource_id.to_string(), job_id.to_string());
    let mut copy = BulkInsert::start(tx, pending, TABLE_COLUMNS, rows.len()).await?;
    for (id, database, table, fingerprint) in rows {
        let id = id.to_string();
        let rows_estimate = table.row_estimate.map(|n| n.to_string());
        let bytes = table.total_bytes.map(|n| n.to_string());
        let details = table.details.to_string();
        let constraints = serde_json::to_string(&table.constraints).expect("json serializes");
        let indexes = serde_json::to_string(&table.indexes).expect("json serializes");
        copy.row(&[
            Some(&id),
            Some(tenant),
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
        ])
        .await?;
    }
    copy.finish(pending).await
}

/// A table and its columns with their types, for [`BulkInsert`].
type Target = (&'static str, &'static [(&'static str, &'static str)]);

const CHANGE_COLUMNS: Target = (
    "catalog_changes",
    &[
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
);

const TABLE_COLUMNS: Target = (
    "catalog_tables",
    &[
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
        ("total_bytes", "int8"),
        ("view_definition", "text"),
        ("details", "jsonb"),
        ("constraints", "jsonb"),
        ("indexes", "jsonb"),
        ("fingerprint", "text"),
        ("last_job_id", "uuid"),
    ],
);

const COLUMN_COLUMNS: Target = (
    "catalog_columns",
    &[
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
);

/// Below this many rows a bulk insert is one `insert … select from unnest(…)`: a single
/// round trip. `COPY` ends with a small `CopyDone` write right after the data, which Nagle's
/// algorithm holds until the server's delayed ACK (~40 ms on Linux; sqlx sets no
/// `TCP_NODELAY`), so it only pays off for large writes.
const COPY_FROM_ROWS: usize = 10_000;

/// Rows in as text: `COPY … FROM STDIN` (text format, sent in ~1 MiB chunks) for large
/// writes, which costs no parameter arrays and about half the server time of
/// `insert … select from unnest(…)`; that insert, with text arrays cast per column, for
/// small ones.
enum BulkInsert<'c> {
    Copy {
        copy: sqlx::postgres::PgCopyIn<&'c mut PgConnection>,
        buf: String,
    },
    Unnest {
        target: Target,
        columns: Vec<Vec<Option<String>>>,
    },
}

/// Small inserts held back to go out as one statement, each a data-modifying CTE: a sync of
/// a small source writes its tables, columns and change rows in one round trip. Foreign keys
/// between them (a column's table) hold, since they are checked at the statement's end.
#[derive(Default)]
struct PendingInserts {
    parts: Vec<(Target, Vec<Vec<Option<String>>>)>,
}

impl PendingInserts {
    /// Sends what is held, if anything.
    async fn execute(&mut self, tx: &mut PgConnection) -> Result<(), sqlx::Error> {
        let parts = std::mem::take(&mut self.parts);
        let mut next_param = 1;
        let mut statements = Vec::with_capacity(self.parts.len());
        for ((table, types), _) in &parts {
            let names: Vec<&str> = types.iter().map(|(name, _)| *name).collect();
            let casts: Vec<String> = types
                .iter()
                .map(|(name, ty)| format!("u.{name}::{ty}"))
                .collect();
            let arrays: Vec<String> = (next_param..next_param + types.len())
                .map(|i| format!("${i}::text[]"))
                .collect();
            next_param += types.len();
            statements.push(format!(
                "insert into {table} ({names}) select {casts} from unnest({arrays}) as u ({names})",
                names = names.join(", "),
                casts = casts.join(", "),
                arrays = arrays.join(", "),
            ));
        }
        let sql = match statements.len() {
            0 => return Ok(()),
            1 => statements.remove(0),
            _ => {
                let ctes: Vec<String> = statements
                    .iter()
                    .enumerate()
                    .map(|(i, insert)| format!("w{i} as ({insert})"))
                    .collect();
                format!("with {} select 1", ctes.join(", "))
            }
        };
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (_, columns) in parts {
            for column in columns {
                query = query.bind(column);
            }
        }
        query.execute(&mut *tx).await?;
        Ok(())
    }
}

impl<'c> BulkInsert<'c> {
    const CHUNK: usize = 1 << 20;

    /// A large write flushes `pending` first: what it holds may be referenced by these rows
    /// (a column's table).
    async fn start(
        tx: &'c mut PgConnection,
        pending: &mut PendingInserts,
        target: Target,
        rows: usize,
    ) -> Result<Self, sqlx::Error> {
        let (table, columns) = target;
        if rows < COPY_FROM_ROWS {
            return Ok(Self::Unnest {
                target,
                columns: vec![Vec::with_capacity(rows); columns.len()],
            });
        }
        pending.execute(tx).await?;
        let names: Vec<&str> = columns.iter().map(|(name, _)| *name).collect();
        let statement = format!("copy {table} ({}) from stdin", names.join(", "));
        Ok(Self::Copy {
            copy: tx.copy_in_raw(&statement).await?,
            buf: String::with_capacity(Self::CHUNK + 4096),
        })
    }

    async fn row(&mut self, fields: &[Option<&str>]) -> Result<(), sqlx::Error> {
        match self {
            Self::Copy { copy, buf } => {
                push_copy_row(buf, fields);
                if buf.len() >= Self::CHUNK {
                    copy.send(buf.as_bytes()).await?;
                    buf.clear();
                }
            }
            Self::Unnest { columns, .. } => {
                for (column, field) in columns.iter_mut().zip(fields) {
                    column.push(field.map(str::to_owned));
                }
            }
        }
        Ok(())
    }

    /// Finishes a COPY, or hands the rows to `pending`, and returns the rows inserted (a plain
    /// insert writes every row or fails). A COPY dropped before this is aborted by sqlx.
    async fn finish(self, pending: &mut PendingInserts) -> Result<u64, sqlx::Error> {
        match self {
            Self::Copy { mut copy, buf } => {
                if !buf.is_empty() {
                    copy.send(buf.as_bytes()).await?;
                }
                copy.finish().await
            }
            Self::Unnest { target, columns } => {
                let rows = columns.first().map_or(0, Vec::len);
                if rows > 0 {
                    pending.parts.push((target, columns));
                }
                Ok(rows as u64)
            }
        }
    }
}

async fn write_schemas(
    tx: &mut PgConnection,
    tenant: &str,
    resource_id: Uuid,
    snapshot: &Snapshot,
    stored: Vec<(String, String, Option<String>, Option<String>)>,
) -> Result<(u64, Vec<ChangeRow>), sqlx::Error> {
    let stored: HashMap<(String, String), SchemaInfo> = stored
        .into_iter()
        .map(|(db, name, owner, comment)| {
            let info = SchemaInfo {
                name: name.clone(),
                owner,
                comment,
            };
            ((db, name), info)
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
    for database in &snapshot.databases {
        for schema in &database.schemas {
            let key = (database.name.clone(), schema.name.clone());
            let old = stored.get(&key);
            match old {
                None => changes.push(change(
                    &database.name,
                    &schema.name,
                    ChangeKind::SchemaAdded,
                    None,
                    Some(serde_json::json!(schema)),
                )),
                Some(old) if old.comment != schema.comment => changes.push(change(
                    &database.name,
                    &schema.name,
                    ChangeKind::CommentChanged,
                    Some(serde_json::json!(old.comment)),
                    Some(serde_json::json!(schema.comment)),
                )),
                Some(_) => {}
            }
            if old != Some(schema) {
                dbs.push(database.name.as_str());
                names.push(schema.name.as_str());
                owners.push(schema.owner.as_deref());
                comments.push(schema.comment.as_deref());
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
        .bind(resource_id)
        .bind(&gone_dbs)
        .bind(&gone_names)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    if !names.is_empty() {
        let ids: Vec<Uuid> = names.iter().map(|_| Uuid::now_v7()).collect();
        written += sqlx::query(
            "insert into catalog_schemas (id, tenant_id, resource_id, database, name, owner, comment)
             select id, $1, $2, db, name, owner, comment
             from unnest($3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[])
                  as s (id, db, name, owner, comment)
             on conflict (resource_id, database, name)
             do update set owner = excluded.owner, comment = excluded.comment",
        )
        .bind(tenant)
        .bind(resource_id)
        .bind(&ids)
        .bind(&dbs)
        .bind(&names)
        .bind(&owners)
        .bind(&comments)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    Ok((written, changes))
}

async fn upsert_tables(
    tx: &mut PgConnection,
    tenant: &str,
    resource_id: Uuid,
    job_id: Uuid,
    rows: &[(Uuid, &str, &TableInfo, String)],
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
    for (id, db, table, fingerprint) in rows {
        ids.push(*id);
        dbs.push(*db);
        schemas.push(table.schema.as_str());
        names.push(table.name.as_str());
        kinds.push(table.kind.as_str());
        owners.push(table.owner.as_deref());
        comments.push(table.comment.as_deref());
        row_estimates.push(table.row_estimate);
        sizes.push(table.total_bytes);
        view_definitions.push(table.view_definition.as_deref());
        details.push(table.details.clone());
        constraints.push(serde_json::to_value(&table.constraints).expect("serializable"));
        indexes.push(serde_json::to_value(&table.indexes).expect("serializable"));
        fingerprints.push(fingerprint.as_str());
    }
    let done = sqlx::query(
        "insert into catalog_tables (id, tenant_id, resource_id, database, schema_name, name,
             kind, owner, comment, row_estimate, total_bytes, view_definition, details,
             constraints, indexes, fingerprint, last_job_id)
         select t.id, $1, $2, t.db, t.schema_name, t.name, t.kind, t.owner, t.comment,
                t.row_estimate, t.total_bytes, t.view_definition, t.details, t.constraints,
                t.indexes, t.fingerprint, $3
         from unnest($4::uuid[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[],
                     $10::text[], $11::int8[], $12::int8[], $13::text[], $14::jsonb[],
                     $15::jsonb[], $16::jsonb[], $17::text[])
              as t (id, db, schema_name, name, kind, owner, comment, row_estimate, total_bytes,
                    view_definition, details, constraints, indexes, fingerprint)
         on conflict (resource_id, database, schema_name, name) do update set
             kind = excluded.kind, owner = excluded.owner, comment = excluded.comment,
             row_estimate = excluded.row_estimate, total_bytes = excluded.total_bytes,
             view_definition = excluded.view_definition, details = excluded.details,
             constraints = excluded.constraints, indexes = excluded.indexes,
             fingerprint = excluded.fingerprint, last_job_id = excluded.last_job_id,
             last_changed_at = now()",
    )
    .bind(tenant)
    .bind(resource_id)
    .bind(job_id)
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
    .execute(&mut *tx)
    .await?;
    Ok(done.rows_affected())
}

async fn insert_columns(
    tx: &mut PgConnection,
    pending: &mut PendingInserts,
    tenant: &str,
    rows: &[(Uuid, &str, &TableInfo, String)],
) -> Result<u64, sqlx::Error> {
    if rows.iter().all(|(_, _, t, _)| t.columns.is_empty()) {
        return Ok(0);
    }
    let n = rows.iter().map(|(_, _, t, _)| t.columns.len()).sum();
    let mut copy = BulkInsert::start(tx, pending, COLUMN_COLUMNS, n).await?;
    for (id, _, table, _) in rows {
        let id = id.to_string();
        for column in &table.columns {
            let details = column.details.to_string();
            let position = column.position.to_string();
            copy.row(&[
                Some(&id),
                Some(tenant),
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

/// Appends one row in `COPY` text format: tab-separated, `\N` for null, and backslash,
/// tab, newline and carriage return escaped, so any identifier or comment round-trips.
fn push_copy_row(buf: &mut String, fields: &[Option<&str>]) {
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            buf.push('\t');
        }
        match field {
            None => buf.push_str("\\N"),
            Some(text) => {
                for c in text.chars() {
                    match c {
                        '\\' => buf.push_str("\\\\"),
                        '\t' => buf.push_str("\\t"),
                        '\n' => buf.push_str("\\n"),
                        '\r' => buf.push_str("\\r"),
                        c => buf.push(c),
                    }
                }
            }
        }
    }
    buf.push('\n');
}

/// A stored table in a listing.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct TableSummary {
    pub id: Uuid,
    pub resource_id: Uuid,
    pub database: String,
    pub schema: String,
    pub name: String,
    pub kind: String,
    pub comment: Option<String>,
    pub row_estimate: Option<i64>,
    pub total_bytes: Option<i64>,
    pub last_changed_at: DateTime<Utc>,
}

const SUMMARY_COLUMNS: &str = "id, resource_id, database, schema_name as schema, name, kind, \
                               comment, row_estimate, total_bytes, last_changed_at";

/// Filters and keyset position for listing a resource's tables, ordered by
/// `(database, schema, name)`.
#[derive(Debug, Default)]
pub struct TableFilter {
    pub schema: Option<String>,
    pub kind: Option<String>,
    /// Substring of the table name, case-insensitive.
    pub q: Option<String>,
    /// The `(database, schema, name)` of the last table of the previous page.
    pub after: Option<(String, String, String)>,
    pub limit: i64,
}

pub async fn list_tables(
    db: impl PgExecutor<'_>,
    tenant: &str,
    resource_id: Uuid,
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
    .fetch_all(db)
    .await
}

/// Escapes `%`, `_` and `\` so user text matches literally inside `ilike`.
pub fn escape_like(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// A stored table with everything known about it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct TableDetail {
    #[sqlx(flatten)]
    #[serde(flatten)]
    pub summary: TableSummary,
    pub owner: Option<String>,
    pub view_definition: Option<String>,
    pub details: serde_json::Value,
    pub constraints: serde_json::Value,
    pub indexes: serde_json::Value,
    #[sqlx(skip)]
    pub columns: Vec<StoredColumn>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct StoredColumn {
    pub position: i32,
    pub name: String,
    pub data_type: String,
    pub nullable: bool,
    pub default_value: Option<String>,
    pub comment: Option<String>,
    pub details: serde_json::Value,
}

pub async fn get_table(
    pool: &sqlx::PgPool,
    tenant: &str,
    id: Uuid,
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
    table.columns = sqlx::query_as(
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
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct SchemaSummary {
    pub id: Uuid,
    pub database: String,
    pub name: String,
    pub owner: Option<String>,
    pub comment: Option<String>,
    /// Stored tables and views in the schema.
    pub tables: i64,
}

/// A resource's schemas ordered by `(database, name)`, after the keyset position `after`.
pub async fn list_schemas(
    db: impl PgExecutor<'_>,
    tenant: &str,
    resource_id: Uuid,
    after: Option<(String, String)>,
    limit: i64,
) -> Result<Vec<SchemaSummary>, sqlx::Error> {
    let (after_db, after_name) = after.unzip();
    sqlx::query_as(
        "select s.id, s.database, s.name, s.owner, s.comment,
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
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct StoredChange {
    pub id: Uuid,
    pub job_id: Option<Uuid>,
    pub database: String,
    pub schema: String,
    pub table: Option<String>,
    pub kind: String,
    pub object_name: Option<String>,
    pub details: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

/// A resource's changes at or after `since`, oldest first, in `(created_at, id)` keyset order
/// after `after`.
pub async fn list_changes(
    db: impl PgExecutor<'_>,
    tenant: &str,
    resource_id: Uuid,
    since: Option<DateTime<Utc>>,
    after: Option<(DateTime<Utc>, Uuid)>,
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
         order by created_at, id
         limit $6",
    )
    .bind(tenant)
    .bind(resource_id)
    .bind(since)
    .bind(after_at)
    .bind(after_id)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// A table or column whose name matched a search.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct SearchHit {
    /// `table` or `column`.
    pub kind: String,
    /// The matched name: the table's or the column's.
    pub name: String,
    pub table_id: Uuid,
    /// The column's position; 0 for a table (positions start at 1).
    pub position: i32,
    pub resource_id: Uuid,
    pub database: String,
    pub schema: String,
    pub table: String,
    /// The table's kind (`table`, `view`, …).
    pub table_kind: String,
    /// The column's type; absent for a table.
    pub data_type: Option<String>,
}

/// Tables and columns of `tenant` whose name contains `q` (case-insensitive), ordered by
/// `(name, table_id, position)` after the keyset position `after`.
///
/// `name ilike '%q%'` is what the `pg_trgm` GIN indexes `catalog_tables_name_trgm` and
/// `catalog_columns_name_trgm` serve (for a `q` of three characters or more), so the
/// candidates come from the index, not a scan of every column.
pub async fn search(
    db: impl PgExecutor<'_>,
    tenant: &str,
    q: &str,
    after: Option<(String, Uuid, i32)>,
    limit: i64,
) -> Result<Vec<SearchHit>, sqlx::Error> {
    let pattern = format!("%{}%", escape_like(q));
    let (after_name, after_table, after_position) = match after {
        Some((name, table, position)) => (Some(name), Some(table), Some(position)),
        None => (None, None, None),
    };
    sqlx::query_as(
        "(select 'table' as kind, t.name, t.id as table_id, 0 as position, t.resource_id,
                 t.database, t.schema_name as schema, t.name as table, t.kind as table_kind,
                 null::text as data_type
          from catalog_tables t
          where t.tenant_id = $1 and t.name ilike $2
            and ($3::text is null or (t.name, t.id, 0) > ($3, $4, $5))
          order by t.name, t.id
          limit $6)
         union all
         (select 'column', c.name, c.table_id, c.position, t.resource_id, t.database,
                 t.schema_name, t.name, t.kind, c.data_type
          from catalog_columns c join catalog_tables t on t.id = c.table_id
          where c.tenant_id = $1 and c.name ilike $2
            and ($3::text is null or (c.name, c.table_id, c.position) > ($3, $4, $5))
          order by c.name, c.table_id, c.position
          limit $6)
         order by name, table_id, position
         limit $6",
    )
    .bind(tenant)
    .bind(pattern)
    .bind(after_name)
    .bind(after_table)
    .bind(after_position)
    .bind(limit)
    .fetch_all(db)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn copy_rows_escape_what_copy_text_format_interprets() {
        let mut buf = String::new();
        let fields = [Some("a\tb\\c\nd\re"), None, Some("\\N")];
        push_copy_row(&mut buf, &fields);
        assert_eq!(buf, "a\\tb\\\\c\\nd\\re\t\\N\t\\\\N\n");
    }
}
