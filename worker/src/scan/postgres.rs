//! PostgreSQL scanner: `pg_catalog` (not the slow `information_schema` views), one statement
//! per object family per database.
//!
//! Set-based throughout: comments come from joins on `pg_description` rather than
//! `obj_description()`/`col_description()` per row (measured 2-4× faster on the columns of
//! 2,000 tables), and the total size is an estimate from `relpages` of the table, its TOAST
//! table and its indexes, like the row estimate, instead of `pg_total_relation_size()`, which
//! stats every file of every relation (~40% of the relations statement at 2,000 tables).

use std::collections::HashMap;

use futures::TryStreamExt as _;
use metasync_shared::catalog::{
    ColumnInfo, ConstraintInfo, DatabaseSnapshot, ForeignKeyTarget, IndexInfo, SchemaInfo,
    Snapshot, TableInfo,
};
use metasync_shared::scan_options::{Depth, ScanOptions};
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use sqlx::{ConnectOptions as _, Connection as _, PgConnection};

use super::reuse::{SourceConnections, SourceKey, Taken};
use super::{ScanLimits, ScanTarget};
use crate::error::JobError;

/// PostgreSQL's `FirstNormalObjectId`: objects made by initdb (the system catalogs, their
/// columns, indexes and constraints) have smaller oids, everything created later has larger
/// ones (the oid counter wraps back to this value, never below). Filtering on it lets each
/// query range-scan the catalogs' oid indexes instead of reading every system row, which on
/// a small database is most of the work (about 4x fewer catalog rows for a one-table source).
const FIRST_USER_OID: u32 = 16384;

/// Schemas that are the server's own, never a user's.
const SYSTEM_SCHEMAS: &str = "n.nspname not in ('pg_catalog', 'information_schema', 'pg_toast')
     and n.nspname not like 'pg\\_temp\\_%' and n.nspname not like 'pg\\_toast\\_temp\\_%'";

pub async fn scan(
    target: &ScanTarget<'_>,
    options: &ScanOptions,
    limits: ScanLimits,
    sources: &SourceConnections,
) -> Result<Snapshot, JobError> {
    let resource = target.resource;
    let mut statements = 0;
    let names = match options.database_names(&resource.database) {
        Some(names) => names,
        None => {
            let (key, mut taken) = open(target, &resource.database, limits, sources).await?;
            let names = sqlx::query_scalar(
                "select datname::text from pg_database
                 where datallowconn and not datistemplate order by 1",
            )
            .fetch_all(&mut taken.conn)
            .await
            .map_err(|e| JobError::from_source("listing databases", &e));
            statements += 1;
            sources
                .postgres
                .give_back(key, taken, names.is_ok(), limits.connect_timeout)
                .await;
            names?
        }
    };
    // One database at a time: a server with many databases never holds more than one
    // connection or one snapshot transaction open for this job.
    let mut databases = Vec::with_capacity(names.len());
    for name in &names {
        let (key, mut taken) = open(target, name, limits, sources).await?;
        let result = read_database(&mut taken.conn, name, options, &mut statements).await;
        sources
            .postgres
            .give_back(key, taken, result.is_ok(), limits.connect_timeout)
            .await;
        databases.push(result?);
    }
    Ok(Snapshot {
        databases,
        statements,
    })
}

/// A connection to `database`: a parked one for the same credentials if alive, else a new one.
async fn open(
    target: &ScanTarget<'_>,
    database: &str,
    limits: ScanLimits,
    sources: &SourceConnections,
) -> Result<(SourceKey, Taken<PgConnection>), JobError> {
    let resource = target.resource;
    let key = sources.key(
        &resource.host,
        resource.port as u16,
        database,
        &resource.username,
        target.password,
    );
    let taken = super::open(
        &sources.postgres,
        &key,
        || connect_options(target, database, limits),
        limits,
    )
    .await?;
    Ok((key, taken))
}

fn connect_options(
    target: &ScanTarget<'_>,
    database: &str,
    limits: ScanLimits,
) -> PgConnectOptions {
    let resource = target.resource;
    PgConnectOptions::new()
        .host(&resource.host)
        .port(resource.port as u16)
        .database(database)
        .username(&resource.username)
        .password(target.password)
        .application_name("metasync")
        .ssl_mode(PgSslMode::Disable)
        .options([
            (
                "statement_timeout",
                format!("{}ms", limits.statement_timeout.as_millis()),
            ),
            ("default_transaction_read_only", "on".to_owned()),
        ])
        .disable_statement_logging()
}

type SchemaRow = (String, Option<String>, Option<String>);
type RelationRow = (
    i64,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<String>,
);
type ColumnRow = (
    i64,
    i16,
    String,
    String,
    bool,
    Option<String>,
    Option<String>,
    String,
    String,
);
/// A constraint (`'c'`) or an index (`'i'`): table oid, family, name, constraint type,
/// columns (null for an index's expression columns), referenced schema, table and columns,
/// check definition or index expression, unique, primary, index method.
type KeyRow = (
    i64,
    String,
    String,
    Option<String>,
    Vec<Option<String>>,
    Option<String>,
    Option<String>,
    Option<Vec<String>>,
    Option<String>,
    Option<bool>,
    Option<bool>,
    Option<String>,
);

/// At most 6 statements, whatever the table count: begin, schemas, relations, columns,
/// constraints with indexes, commit.
/// Shallower depths skip the families they do not need.
async fn read_database(
    conn: &mut PgConnection,
    name: &str,
    options: &ScanOptions,
    statements: &mut u64,
) -> Result<DatabaseSnapshot, JobError> {
    let fail = |what: &str| {
        let what = what.to_owned();
        move |e: sqlx::Error| JobError::from_source(&what, &e)
    };
    let mut tx = conn
        .begin_with("begin isolation level repeatable read read only")
        .await
        .map_err(fail("starting a read-only transaction"))?;
    *statements += 1;

    let schemas: Vec<SchemaRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select n.nspname, pg_get_userbyid(n.nspowner)::text, ds.description
         from pg_namespace n
              left join pg_description ds
                     on ds.objoid = n.oid and ds.classoid = 'pg_namespace'::regclass
                    and ds.objsubid = 0
         where {SYSTEM_SCHEMAS} order by 1"
    )))
    .fetch_all(&mut *tx)
    .await
    .map_err(fail("reading schemas"))?;
    *statements += 1;

    let mut relations: Vec<RelationRow> = Vec::new();
    if options.depth >= Depth::Tables {
        relations = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select c.oid::int8, n.nspname::text, c.relname::text, c.relkind::text,
                pg_get_userbyid(c.relowner)::text, ds.description,
                case when c.reltuples >= 0 then c.reltuples::int8 end,
                case when c.relkind in ('r', 'm') then
                    (c.relpages::int8 + coalesce(toast.relpages, 0) + coalesce(ix.pages, 0))
                    * current_setting('block_size')::int8
                end,
                case when c.relkind in ('v', 'm') then pg_get_viewdef(c.oid) end,
                quote_ident(pn.nspname) || '.' || quote_ident(pc.relname)
         from pg_class c join pg_namespace n on n.oid = c.relnamespace
              left join pg_description ds
                     on ds.objoid = c.oid and ds.classoid = 'pg_class'::regclass
                    and ds.objsubid = 0
              left join pg_class toast on toast.oid = c.reltoastrelid
              left join (select i.indrelid, sum(ic.relpages) as pages
                         from pg_index i join pg_class ic on ic.oid = i.indexrelid
                         where i.indrelid >= {FIRST_USER_OID}
                         group by i.indrelid) ix on ix.indrelid = c.oid
              left join pg_inherits inh on inh.inhrelid = c.oid and c.relispartition
              left join pg_class pc on pc.oid = inh.inhparent
              left join pg_namespace pn on pn.oid = pc.relnamespace
         where c.oid >= {FIRST_USER_OID} and c.relkind in ('r', 'v', 'm', 'p', 'f')
           and {SYSTEM_SCHEMAS}
         order by 2, 3"
        )))
        .fetch_all(&mut *tx)
        .await
        .map_err(fail("reading tables and views"))?;
        *statements += 1;
    }
    let mut assembly = Assembly::new(options, relations);
    if options.depth == Depth::Everything {
        let mut rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select a.attrelid::int8, a.attnum, a.attname::text, format_type(a.atttypid, a.atttypmod),
                not a.attnotnull, pg_get_expr(d.adbin, d.adrelid), ds.description,
                a.attidentity::text, a.attgenerated::text
         from pg_attribute a
              join pg_class c on c.oid = a.attrelid
              join pg_namespace n on n.oid = c.relnamespace
              left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
              left join pg_description ds
                     on ds.objoid = a.attrelid and ds.classoid = 'pg_class'::regclass
                    and ds.objsubid = a.attnum
         where a.attrelid >= {FIRST_USER_OID} and c.oid >= {FIRST_USER_OID}
           and a.attnum > 0 and not a.attisdropped
           and c.relkind in ('r', 'v', 'm', 'p', 'f') and {SYSTEM_SCHEMAS}
         order by 1, 2"
    )))
        .fetch(&mut *tx);
        while let Some(row) = rows.try_next().await.map_err(fail("reading columns"))? {
            assembly.add_column(row);
        }
        drop(rows);
        *statements += 1;

        // Constraints and indexes in one statement: constraints first, then indexes, each
        // by table and name. The columns a row does not use are null.
        let mut rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select con.conrelid::int8, 'c'::text, con.conname::text, con.contype::text,
                array(select a.attname::text
                      from unnest(con.conkey) with ordinality k (num, ord)
                           join pg_attribute a on a.attrelid = con.conrelid and a.attnum = k.num
                      order by k.ord),
                fn.nspname::text, fc.relname::text,
                case when con.contype = 'f' then
                    array(select a.attname::text
                          from unnest(con.confkey) with ordinality k (num, ord)
                               join pg_attribute a on a.attrelid = con.confrelid and a.attnum = k.num
                          order by k.ord)
                end,
                case when con.contype = 'c' then pg_get_constraintdef(con.oid) end,
                null::bool, null::bool, null::text
         from pg_constraint con
              join pg_class c on c.oid = con.conrelid
              join pg_namespace n on n.oid = c.relnamespace
              left join pg_class fc on fc.oid = con.confrelid
              left join pg_namespace fn on fn.oid = fc.relnamespace
         where con.conrelid >= {FIRST_USER_OID} and c.oid >= {FIRST_USER_OID}
           and con.contype in ('p', 'f', 'u', 'c') and {SYSTEM_SCHEMAS}
         union all
         select i.indrelid::int8, 'i'::text, ic.relname::text, null::text,
                array(select a.attname::text
                      from unnest(i.indkey::int2[]) with ordinality k (num, ord)
                           left join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.num
                      order by k.ord),
                null::text, null::text, null::text[],
                pg_get_expr(i.indexprs, i.indrelid),
                i.indisunique, i.indisprimary, am.amname::text
         from pg_index i
              join pg_class ic on ic.oid = i.indexrelid
              join pg_am am on am.oid = ic.relam
              join pg_class c on c.oid = i.indrelid
              join pg_namespace n on n.oid = c.relnamespace
         where i.indrelid >= {FIRST_USER_OID} and c.oid >= {FIRST_USER_OID} and {SYSTEM_SCHEMAS}
         order by 2, 1, 3"
    )))
        .fetch(&mut *tx);
        while let Some(row) = rows
            .try_next()
            .await
            .map_err(fail("reading constraints and indexes"))?
        {
            assembly.add_key(row);
        }
        drop(rows);
        *statements += 1;
    }

    tx.commit()
        .await
        .map_err(fail("ending the read-only transaction"))?;
    *statements += 1;

    Ok(assembly.finish(name, options, schemas))
}

fn relation_kind(relkind: &str) -> &'static str {
    match relkind {
        "v" => "view",
        "m" => "materialized_view",
        "p" => "partitioned_table",
        "f" => "foreign_table",
        _ => "table",
    }
}

fn constraint_kind(contype: &str) -> &'static str {
    match contype {
        "p" => "primary_key",
        "f" => "foreign_key",
        "u" => "unique",
        _ => "check",
    }
}

/// Joins the per-family rows into tables, by relation oid, one row at a time: the rows are
/// streamed from the source, so the raw result sets never sit in memory beside the tables
/// built from them (at 20,000 tables the columns alone are 300,000 rows).
struct Assembly {
    tables: Vec<TableInfo>,
    by_oid: HashMap<i64, usize>,
}

impl Assembly {
    fn new(options: &ScanOptions, relations: Vec<RelationRow>) -> Self {
        let mut tables: Vec<TableInfo> = Vec::with_capacity(relations.len());
        let mut by_oid: HashMap<i64, usize> = HashMap::with_capacity(relations.len());
        for (oid, schema, name, relkind, owner, comment, rows, bytes, view_def, parent) in relations
        {
            if !options.table_included(&schema, &name) {
                continue;
            }
            let details = match parent {
                Some(parent) => json!({ "partition_of": parent }),
                None => json!({}),
            };
            by_oid.insert(oid, tables.len());
            tables.push(TableInfo {
                schema,
                name,
                kind: relation_kind(&relkind).to_owned(),
                owner,
                comment,
                row_estimate: rows,
                total_bytes: bytes,
                view_definition: view_def,
                details,
                columns: Vec::new(),
                constraints: Vec::new(),
                indexes: Vec::new(),
            });
        }
        Self { tables, by_oid }
    }

    fn table(&mut self, oid: i64) -> Option<&mut TableInfo> {
        let i = *self.by_oid.get(&oid)?;
        Some(&mut self.tables[i])
    }

    fn add_column(&mut self, row: ColumnRow) {
        let (oid, position, name, data_type, nullable, default, comment, identity, generated) = row;
        let Some(table) = self.table(oid) else { return };
        let mut details = serde_json::Map::new();
        match identity.as_str() {
            "a" => drop(details.insert("identity".into(), json!("always"))),
            "d" => drop(details.insert("identity".into(), json!("by_default"))),
            _ => {}
        }
        let (default_value, generated) = if generated == "s" {
            (None, default)
        } else {
            (default, None)
        };
        if let Some(expr) = generated {
            details.insert("generated".into(), json!(expr));
        }
        table.columns.push(ColumnInfo {
            position: i32::from(position),
            name,
            data_type,
            nullable,
            default_value,
            comment,
            details: serde_json::Value::Object(details),
        });
    }

    fn add_key(&mut self, row: KeyRow) {
        let (
            oid,
            family,
            name,
            contype,
            cols,
            ref_schema,
            ref_table,
            ref_cols,
            definition,
            unique,
            primary,
            method,
        ) = row;
        let Some(table) = self.table(oid) else { return };
        let columns = cols.into_iter().flatten().collect();
        if family == "i" {
            table.indexes.push(IndexInfo {
                name,
                columns,
                expression: definition,
                unique: unique.unwrap_or(false),
                primary: primary.unwrap_or(false),
                method: method.unwrap_or_default(),
            });
            return;
        }
        let contype = contype.unwrap_or_default();
        let references = match (ref_schema, ref_table) {
            (Some(schema), Some(table)) if contype == "f" => Some(ForeignKeyTarget {
                schema,
                table,
                columns: ref_cols.unwrap_or_default(),
            }),
            _ => None,
        };
        table.constraints.push(ConstraintInfo {
            name,
            kind: constraint_kind(&contype).to_owned(),
            columns,
            references,
            definition,
        });
    }

    fn finish(
        self,
        database: &str,
        options: &ScanOptions,
        schemas: Vec<SchemaRow>,
    ) -> DatabaseSnapshot {
        DatabaseSnapshot {
            name: database.to_owned(),
            schemas: schemas
                .into_iter()
                .filter(|(name, _, _)| options.schema_included(name))
                .map(|(name, owner, comment)| SchemaInfo {
                    name,
                    owner,
                    comment,
                })
                .collect(),
            tables: self.tables,
        }
    }
}
