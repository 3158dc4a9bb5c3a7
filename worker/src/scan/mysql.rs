//! MySQL/MariaDB scanner: `information_schema`, one statement per object family for the whole
//! server (MySQL's schemas are its databases), inside a READ ONLY transaction.

use std::collections::HashMap;

use metasync_shared::catalog::{
    ColumnInfo, ConstraintInfo, DatabaseSnapshot, ForeignKeyTarget, IndexInfo, SchemaInfo,
    Snapshot, TableInfo,
};
use serde_json::json;
use sqlx::mysql::{MySqlConnectOptions, MySqlSslMode};
use sqlx::{ConnectOptions as _, Connection as _, MySqlConnection};

use metasync_shared::scan_options::{Depth, ScanOptions};

use super::reuse::SourceConnections;
use super::{ScanLimits, ScanTarget};
use crate::error::JobError;

const SYSTEM_SCHEMAS: &str = "('mysql', 'information_schema', 'performance_schema', 'sys')";

pub async fn scan(
    target: &ScanTarget<'_>,
    options: &ScanOptions,
    limits: ScanLimits,
    sources: &SourceConnections,
) -> Result<Snapshot, JobError> {
    let resource = target.resource;
    let key = sources.key(
        &resource.host,
        resource.port as u16,
        &resource.database,
        &resource.username,
        target.password,
    );
    let mut taken = super::open(&sources.mysql, &key, || connect_options(target), limits).await?;
    let mut statements = 0;
    let result = read_server(
        &mut taken.conn,
        &resource.database,
        options,
        limits,
        &mut statements,
    )
    .await;
    sources
        .mysql
        .give_back(key, taken, result.is_ok(), limits.connect_timeout)
        .await;
    Ok(Snapshot {
        databases: vec![result?],
        statements,
    })
}

fn connect_options(target: &ScanTarget<'_>) -> MySqlConnectOptions {
    let resource = target.resource;
    let options = MySqlConnectOptions::new()
        .host(&resource.host)
        .port(resource.port as u16)
        .database(&resource.database)
        .username(&resource.username)
        .ssl_mode(MySqlSslMode::Disabled)
        .disable_statement_logging();
    // An empty password means "none": sending an empty one fails where none is expected.
    if target.password.is_empty() {
        options
    } else {
        options.password(target.password)
    }
}

type TableRow = (
    String,
    String,
    String,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);
type ColumnRow = (
    String,
    String,
    i64,
    String,
    String,
    String,
    Option<String>,
    String,
    String,
);
type ConstraintRow = (
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);
type IndexRow = (
    String,
    String,
    String,
    i64,
    Option<String>,
    Option<String>,
    String,
);

/// Which MySQL databases (its schemas) a scan reads, as a condition on `column` with the
/// names to bind: the resource's database by default, every non-system one for `"all"`.
fn schema_condition(column: &str, names: Option<&[String]>) -> String {
    match names {
        Some(names) => {
            let marks = vec!["?"; names.len()].join(", ");
            format!("{column} in ({marks})")
        }
        None => format!("{column} not in {SYSTEM_SCHEMAS}"),
    }
}

/// Runs one catalog query restricted to the selected databases.
async fn fetch<T>(
    conn: &mut MySqlConnection,
    sql: String,
    names: Option<&[String]>,
) -> Result<Vec<T>, sqlx::Error>
where
    T: Send + Unpin + for<'r> sqlx::FromRow<'r, sqlx::mysql::MySqlRow>,
{
    let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql));
    for name in names.unwrap_or_default() {
        query = query.bind(name);
    }
    query.fetch_all(conn).await
}

/// At most 9 statements, whatever the table count: the timeout, begin, one per object
/// family, commit. Shallower depths skip the families they do not need.
async fn read_server(
    conn: &mut MySqlConnection,
    database: &str,
    options: &ScanOptions,
    limits: ScanLimits,
    statements: &mut u64,
) -> Result<DatabaseSnapshot, JobError> {
    let names = options.database_names(database);
    let names = names.as_deref();
    let fail = |what: &'static str| move |e: sqlx::Error| JobError::from_source(what, &e);
    // MariaDB's max_statement_time is in seconds; MySQL's max_execution_time in milliseconds.
    let timeout_secs = limits.statement_timeout.as_secs_f64();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "set session max_statement_time = {timeout_secs}"
    )))
    .execute(&mut *conn)
    .await
    .or(Ok::<_, sqlx::Error>(Default::default()))
    .map_err(fail("setting the statement timeout"))?;
    *statements += 1;
    let mut tx = conn
        .begin_with("start transaction read only")
        .await
        .map_err(fail("starting a read-only transaction"))?;
    *statements += 1;

    let schemas: Vec<(String, Option<String>)> = fetch(
        &mut tx,
        format!(
            "select cast(schema_name as char), cast(null as char)
             from information_schema.schemata where {} order by 1",
            schema_condition("schema_name", names)
        ),
        names,
    )
    .await
    .map_err(fail("reading schemas"))?;
    *statements += 1;

    let mut rows = Rows {
        schemas,
        ..Rows::default()
    };
    if options.depth >= Depth::Tables {
        rows.tables = fetch(
            &mut tx,
            format!(
                "select cast(t.table_schema as char), cast(t.table_name as char),
                        cast(t.table_type as char), cast(t.engine as char),
                        cast(t.table_rows as signed),
                        cast(t.data_length + t.index_length as signed),
                        cast(t.table_comment as char), cast(v.view_definition as char),
                        cast(t.create_time as char), cast(t.update_time as char)
                 from information_schema.tables t
                      left join information_schema.views v
                             on v.table_schema = t.table_schema
                            and v.table_name = t.table_name
                 where {} order by 1, 2",
                schema_condition("t.table_schema", names)
            ),
            names,
        )
        .await
        .map_err(fail("reading tables and views"))?;
        *statements += 1;
    }
    if options.depth == Depth::Everything {
        rows.columns = fetch(
            &mut tx,
            format!(
                "select cast(table_schema as char), cast(table_name as char),
                        cast(ordinal_position as signed), cast(column_name as char),
                        cast(column_type as char), cast(is_nullable as char),
                        cast(column_default as char), cast(extra as char),
                        cast(column_comment as char)
                 from information_schema.columns
                 where {} order by 1, 2, 3",
                schema_condition("table_schema", names)
            ),
            names,
        )
        .await
        .map_err(fail("reading columns"))?;
        *statements += 1;

        // Key columns of primary, unique and foreign keys. KEY_COLUMN_USAGE alone: joining it
        // to TABLE_CONSTRAINTS makes MariaDB re-open every table per row (0.03 s alone, 1 s
        // joined at 2,000 tables), and the kind follows from the row (check constraints come
        // from CHECK_CONSTRAINTS below).
        rows.constraints = fetch(
            &mut tx,
            format!(
                "select cast(table_schema as char), cast(table_name as char),
                        cast(constraint_name as char),
                        case when constraint_name = 'PRIMARY' then 'PRIMARY KEY'
                             when referenced_table_name is not null then 'FOREIGN KEY'
                             else 'UNIQUE' end,
                        cast(column_name as char), cast(referenced_table_schema as char),
                        cast(referenced_table_name as char),
                        cast(referenced_column_name as char)
                 from information_schema.key_column_usage
                 where {}
                 order by 1, 2, 3, ordinal_position",
                schema_condition("table_schema", names)
            ),
            names,
        )
        .await
        .map_err(fail("reading constraints"))?;
        *statements += 1;

        rows.checks = fetch(
            &mut tx,
            format!(
                "select cast(constraint_schema as char), cast(table_name as char),
                        cast(constraint_name as char), cast(check_clause as char)
                 from information_schema.check_constraints where {}",
                schema_condition("constraint_schema", names)
            ),
            names,
        )
        .await
        .map_err(fail("reading check constraints"))?;
        *statements += 1;

        rows.indexes = fetch(
            &mut tx,
            format!(
                "select cast(table_schema as char), cast(table_name as char),
                        cast(index_name as char), cast(non_unique as signed),
                        cast(column_name as char), cast(null as char), cast(index_type as char)
                 from information_schema.statistics
                 where {}
                 order by 1, 2, 3, seq_in_index",
                schema_condition("table_schema", names)
            ),
            names,
        )
        .await
        .map_err(fail("reading indexes"))?;
        *statements += 1;
    }

    tx.commit()
        .await
        .map_err(fail("ending the read-only transaction"))?;
    *statements += 1;

    Ok(assemble(database, options, rows))
}

/// What the catalog statements returned, one vector per object family.
#[derive(Default)]
struct Rows {
    schemas: Vec<(String, Option<String>)>,
    tables: Vec<TableRow>,
    columns: Vec<ColumnRow>,
    constraints: Vec<ConstraintRow>,
    checks: Vec<(String, String, String, String)>,
    indexes: Vec<IndexRow>,
}

fn assemble(database: &str, options: &ScanOptions, rows: Rows) -> DatabaseSnapshot {
    let Rows {
        schemas,
        tables,
        columns,
        constraints,
        checks,
        indexes,
    } = rows;
    let mut out: Vec<TableInfo> = Vec::with_capacity(tables.len());
    let mut by_name: HashMap<(String, String), usize> = HashMap::with_capacity(tables.len());
    for (schema, name, table_type, engine, rows, bytes, comment, view_def, created, updated) in
        tables
    {
        if !options.table_included(&schema, &name) {
            continue;
        }
        let is_view = table_type.eq_ignore_ascii_case("VIEW");
        let mut details = serde_json::Map::new();
        if let Some(engine) = engine {
            details.insert("engine".into(), json!(engine));
        }
        if let Some(created) = created {
            details.insert("created_at".into(), json!(created));
        }
        if let Some(updated) = updated {
            details.insert("updated_at".into(), json!(updated));
        }
        by_name.insert((schema.clone(), name.clone()), out.len());
        out.push(TableInfo {
            schema,
            name,
            kind: if is_view { "view" } else { "table" }.to_owned(),
            owner: None,
            // MySQL reports "VIEW" as the comment of every view.
            comment: comment.filter(|c| !(c.is_empty() || is_view && c == "VIEW")),
            row_estimate: if is_view { None } else { rows },
            total_bytes: if is_view { None } else { bytes },
            view_definition: view_def,
            details: serde_json::Value::Object(details),
            columns: Vec::new(),
            constraints: Vec::new(),
            indexes: Vec::new(),
        });
    }
    for (schema, table, position, name, data_type, nullable, default, extra, comment) in columns {
        let Some(&i) = by_name.get(&(schema, table)) else {
            continue;
        };
        let details = if extra.is_empty() {
            json!({})
        } else {
            json!({ "extra": extra })
        };
        out[i].columns.push(ColumnInfo {
            position: position as i32,
            name,
            data_type,
            nullable: nullable.eq_ignore_ascii_case("YES"),
            default_value: default,
            comment: Some(comment).filter(|c| !c.is_empty()),
            details,
        });
    }
    for (schema, table, name, kind, column, ref_schema, ref_table, ref_column) in constraints {
        let Some(&i) = by_name.get(&(schema, table)) else {
            continue;
        };
        let kind = match kind.as_str() {
            "PRIMARY KEY" => "primary_key",
            "FOREIGN KEY" => "foreign_key",
            _ => "unique",
        };
        let constraints = &mut out[i].constraints;
        let existing = constraints
            .iter()
            .position(|c| c.name == name && c.kind == kind);
        let index = match existing {
            Some(index) => index,
            None => {
                constraints.push(ConstraintInfo {
                    name,
                    kind: kind.to_owned(),
                    columns: Vec::new(),
                    references: None,
                    definition: None,
                });
                constraints.len() - 1
            }
        };
        let constraint = &mut constraints[index];
        if let Some(column) = column {
            constraint.columns.push(column);
        }
        if let (Some(schema), Some(table)) = (ref_schema, ref_table) {
            let target = constraint.references.get_or_insert(ForeignKeyTarget {
                schema,
                table,
                columns: Vec::new(),
            });
            target.columns.extend(ref_column);
        }
    }
    for (schema, table, name, clause) in checks {
        if let Some(&i) = by_name.get(&(schema, table)) {
            out[i].constraints.push(ConstraintInfo {
                name,
                kind: "check".to_owned(),
                columns: Vec::new(),
                references: None,
                definition: Some(clause),
            });
        }
    }
    // One order whatever the statement each kind came from, so fingerprints are stable.
    for table in &mut out {
        table
            .constraints
            .sort_by(|a, b| (&a.name, &a.kind).cmp(&(&b.name, &b.kind)));
    }
    for (schema, table, name, non_unique, column, expression, method) in indexes {
        let Some(&i) = by_name.get(&(schema, table)) else {
            continue;
        };
        let indexes = &mut out[i].indexes;
        let index = match indexes.iter().position(|x| x.name == name) {
            Some(index) => index,
            None => {
                indexes.push(IndexInfo {
                    primary: name == "PRIMARY",
                    name,
                    columns: Vec::new(),
                    expression,
                    unique: non_unique == 0,
                    method: method.to_lowercase(),
                });
                indexes.len() - 1
            }
        };
        indexes[index].columns.extend(column);
    }
    DatabaseSnapshot {
        name: database.to_owned(),
        schemas: schemas
            .into_iter()
            .filter(|(name, _)| options.schema_included(name))
            .map(|(name, comment)| SchemaInfo {
                name,
                owner: None,
                comment,
            })
            .collect(),
        tables: out,
    }
}
