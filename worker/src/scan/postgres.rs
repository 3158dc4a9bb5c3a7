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
use sqlx::{ConnectOptions as _, PgConnection};

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

/// The columns every family's rows share, with their types. Each family fills the ones it
/// uses (see the `*_branch` functions) and leaves the rest null. The first five are also the
/// sort key: `f` (the family), then schema and relation names, then table oid and column
/// position; `t3` breaks ties by object name.
const UNIFIED: [(&str, &str); 17] = [
    ("f", "int4"),
    ("t1", "text"),
    ("t2", "text"),
    ("oid", "int8"),
    ("pos", "int2"),
    ("t3", "text"),
    ("t4", "text"),
    ("t5", "text"),
    ("t6", "text"),
    ("t7", "text"),
    ("t8", "text"),
    ("b1", "bool"),
    ("b2", "bool"),
    ("i1", "int8"),
    ("i2", "int8"),
    ("a1", "text[]"),
    ("a2", "text[]"),
];

/// One row of the unified catalog query.
#[derive(sqlx::FromRow)]
struct UnifiedRow {
    f: i32,
    t1: Option<String>,
    t2: Option<String>,
    oid: Option<i64>,
    pos: Option<i16>,
    t3: Option<String>,
    t4: Option<String>,
    t5: Option<String>,
    t6: Option<String>,
    t7: Option<String>,
    t8: Option<String>,
    b1: Option<bool>,
    b2: Option<bool>,
    i1: Option<i64>,
    i2: Option<i64>,
    a1: Option<Vec<Option<String>>>,
    a2: Option<Vec<String>>,
}

const SCHEMAS: i32 = 1;
const RELATIONS: i32 = 2;
const COLUMNS: i32 = 3;
const CONSTRAINTS: i32 = 4;
const INDEXES: i32 = 5;

/// One family's `select`, in the unified shape: `fields` maps column names to expressions.
fn branch(family: i32, fields: &[(&str, &str)], from: &str) -> String {
    let select: Vec<String> = UNIFIED
        .iter()
        .map(|(name, ty)| {
            let expr = match *name {
                "f" => family.to_string(),
                _ => fields
                    .iter()
                    .find(|(field, _)| field == name)
                    .map_or("null", |(_, expr)| expr)
                    .to_owned(),
            };
            format!("({expr})::{ty} as {name}")
        })
        .collect();
    format!("select {} {from}", select.join(", "))
}

fn schemas_branch() -> String {
    branch(
        SCHEMAS,
        &[
            ("t1", "n.nspname"),
            ("t3", "pg_get_userbyid(n.nspowner)"),
            ("t4", "ds.description"),
        ],
        &format!(
            "from pg_namespace n
                  left join pg_description ds
                         on ds.objoid = n.oid and ds.classoid = 'pg_namespace'::regclass
                        and ds.objsubid = 0
             where {SYSTEM_SCHEMAS}"
        ),
    )
}

fn relations_branch() -> String {
    branch(
        RELATIONS,
        &[
            ("t1", "n.nspname"),
            ("t2", "c.relname"),
            ("oid", "c.oid"),
            ("t3", "c.relkind"),
            ("t4", "pg_get_userbyid(c.relowner)"),
            ("t5", "ds.description"),
            (
                "t6",
                "case when c.relkind in ('v', 'm') then pg_get_viewdef(c.oid) end",
            ),
            (
                "t7",
                "quote_ident(pn.nspname) || '.' || quote_ident(pc.relname)",
            ),
            (
                "i1",
                "case when c.reltuples >= 0 then c.reltuples::int8 end",
            ),
            (
                "i2",
                "case when c.relkind in ('r', 'm') then
                     (c.relpages::int8 + coalesce(toast.relpages, 0) + coalesce(ix.pages, 0))
                     * current_setting('block_size')::int8
                 end",
            ),
        ],
        &format!(
            "from pg_class c join pg_namespace n on n.oid = c.relnamespace
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
               and {SYSTEM_SCHEMAS}"
        ),
    )
}

fn columns_branch() -> String {
    branch(
        COLUMNS,
        &[
            ("oid", "a.attrelid"),
            ("pos", "a.attnum"),
            ("t3", "a.attname"),
            ("t4", "format_type(a.atttypid, a.atttypmod)"),
            ("t5", "pg_get_expr(d.adbin, d.adrelid)"),
            ("t6", "ds.description"),
            ("t7", "a.attidentity"),
            ("t8", "a.attgenerated"),
            ("b1", "not a.attnotnull"),
        ],
        &format!(
            "from pg_attribute a
                  join pg_class c on c.oid = a.attrelid
                  join pg_namespace n on n.oid = c.relnamespace
                  left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
                  left join pg_description ds
                         on ds.objoid = a.attrelid and ds.classoid = 'pg_class'::regclass
                        and ds.objsubid = a.attnum
             where a.attrelid >= {FIRST_USER_OID} and c.oid >= {FIRST_USER_OID}
               and a.attnum > 0 and not a.attisdropped
               and c.relkind in ('r', 'v', 'm', 'p', 'f') and {SYSTEM_SCHEMAS}"
        ),
    )
}

fn constraints_branch() -> String {
    branch(
        CONSTRAINTS,
        &[
            ("oid", "con.conrelid"),
            ("t3", "con.conname"),
            ("t4", "con.contype"),
            ("t5", "fn.nspname"),
            ("t6", "fc.relname"),
            (
                "t7",
                "case when con.contype = 'c' then pg_get_constraintdef(con.oid) end",
            ),
            (
                "a1",
                "array(select a.attname::text
                       from unnest(con.conkey) with ordinality k (num, ord)
                            join pg_attribute a on a.attrelid = con.conrelid and a.attnum = k.num
                       order by k.ord)",
            ),
            (
                "a2",
                "case when con.contype = 'f' then
                     array(select a.attname::text
                           from unnest(con.confkey) with ordinality k (num, ord)
                                join pg_attribute a
                                  on a.attrelid = con.confrelid and a.attnum = k.num
                           order by k.ord)
                 end",
            ),
        ],
        &format!(
            "from pg_constraint con
                  join pg_class c on c.oid = con.conrelid
                  join pg_namespace n on n.oid = c.relnamespace
                  left join pg_class fc on fc.oid = con.confrelid
                  left join pg_namespace fn on fn.oid = fc.relnamespace
             where con.conrelid >= {FIRST_USER_OID} and c.oid >= {FIRST_USER_OID}
               and con.contype in ('p', 'f', 'u', 'c') and {SYSTEM_SCHEMAS}"
        ),
    )
}

fn indexes_branch() -> String {
    branch(
        INDEXES,
        &[
            ("oid", "i.indrelid"),
            ("t3", "ic.relname"),
            ("t7", "pg_get_expr(i.indexprs, i.indrelid)"),
            ("t8", "am.amname"),
            ("b1", "i.indisunique"),
            ("b2", "i.indisprimary"),
            (
                "a1",
                "array(select a.attname::text
                       from unnest(i.indkey::int2[]) with ordinality k (num, ord)
                            left join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.num
                       order by k.ord)",
            ),
        ],
        &format!(
            "from pg_index i
                  join pg_class ic on ic.oid = i.indexrelid
                  join pg_am am on am.oid = ic.relam
                  join pg_class c on c.oid = i.indrelid
                  join pg_namespace n on n.oid = c.relnamespace
             where i.indrelid >= {FIRST_USER_OID} and c.oid >= {FIRST_USER_OID} and {SYSTEM_SCHEMAS}"
        ),
    )
}

/// The whole database in one statement, whatever the table count: one round trip, and one
/// snapshot (a single statement sees one; the session is READ ONLY). Every object family is a
/// branch of a `union all` in one row shape, sorted by family and then as each family needs:
/// schemas and relations by name, columns by position, constraints and indexes by name.
/// Shallower depths leave out the families they do not need.
async fn read_database(
    conn: &mut PgConnection,
    name: &str,
    options: &ScanOptions,
    statements: &mut u64,
) -> Result<DatabaseSnapshot, JobError> {
    let mut branches = vec![schemas_branch()];
    if options.depth >= Depth::Tables {
        branches.push(relations_branch());
    }
    if options.depth == Depth::Everything {
        branches.extend([columns_branch(), constraints_branch(), indexes_branch()]);
    }
    let sql = format!(
        "{} order by f, t1, t2, oid, pos, t3",
        branches.join("\nunion all\n")
    );

    let mut schemas: Vec<SchemaRow> = Vec::new();
    let mut relations: Vec<RelationRow> = Vec::new();
    // Built once the relations are in: columns and keys attach to them as they stream by.
    let mut assembly: Option<Assembly> = None;
    let mut rows = sqlx::query_as::<_, UnifiedRow>(sqlx::AssertSqlSafe(sql)).fetch(&mut *conn);
    while let Some(row) = rows
        .try_next()
        .await
        .map_err(|e| JobError::from_source("reading the catalog", &e))?
    {
        match row.f {
            SCHEMAS => schemas.push((row.t1.unwrap_or_default(), row.t3, row.t4)),
            RELATIONS => relations.push((
                row.oid.unwrap_or_default(),
                row.t1.unwrap_or_default(),
                row.t2.unwrap_or_default(),
                row.t3.unwrap_or_default(),
                row.t4,
                row.t5,
                row.i1,
                row.i2,
                row.t6,
                row.t7,
            )),
            family => {
                let assembly = assembly
                    .get_or_insert_with(|| Assembly::new(options, std::mem::take(&mut relations)));
                let oid = row.oid.unwrap_or_default();
                match family {
                    COLUMNS => assembly.add_column((
                        oid,
                        row.pos.unwrap_or_default(),
                        row.t3.unwrap_or_default(),
                        row.t4.unwrap_or_default(),
                        row.b1.unwrap_or(true),
                        row.t5,
                        row.t6,
                        row.t7.unwrap_or_default(),
                        row.t8.unwrap_or_default(),
                    )),
                    CONSTRAINTS => assembly.add_key((
                        oid,
                        "c".to_owned(),
                        row.t3.unwrap_or_default(),
                        row.t4,
                        row.a1.unwrap_or_default(),
                        row.t5,
                        row.t6,
                        row.a2,
                        row.t7,
                        None,
                        None,
                        None,
                    )),
                    _ => assembly.add_key((
                        oid,
                        "i".to_owned(),
                        row.t3.unwrap_or_default(),
                        None,
                        row.a1.unwrap_or_default(),
                        None,
                        None,
                        None,
                        row.t7,
                        row.b1,
                        row.b2,
                        row.t8,
                    )),
                }
            }
        }
    }
    drop(rows);
    *statements += 1;
    let assembly = assembly.unwrap_or_else(|| Assembly::new(options, relations));
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
