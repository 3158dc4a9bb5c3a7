//! Assembly: the catalog statements' rows become the engine-independent [`DatabaseSnapshot`].
//! Columns, keys and indexes join their table by schema and table name; keys and indexes arrive
//! one row per key column and are gathered back into one entry each.

use std::collections::HashMap;

use metasync_shared::catalog::{
    ColumnInfo, ConstraintInfo, ConstraintKind, DatabaseSnapshot, ForeignKeyTarget, IndexInfo,
    SchemaInfo, TableInfo,
};
use metasync_shared::scan_options::Filters;
use serde_json::json;

use super::sql::{CheckRow, ColumnRow, IndexColumnRow, KeyColumnRow, SchemaRow, TableRow};

/// What the catalog statements returned, one vector per object family.
#[derive(Default)]
pub(super) struct Rows {
    pub schemas: Vec<SchemaRow>,
    pub tables: Vec<TableRow>,
    pub columns: Vec<ColumnRow>,
    pub key_columns: Vec<KeyColumnRow>,
    pub checks: Vec<CheckRow>,
    pub index_columns: Vec<IndexColumnRow>,
}

pub(super) fn assemble(database: &str, filters: &Filters, rows: Rows) -> DatabaseSnapshot {
    let Rows {
        schemas,
        tables,
        columns,
        key_columns,
        checks,
        index_columns,
    } = rows;
    let mut out: Vec<TableInfo> = Vec::with_capacity(tables.len());
    let mut by_name: HashMap<(String, String), usize> = HashMap::with_capacity(tables.len());
    for row in tables {
        if !filters.table_included(&row.table_schema, &row.table_name) {
            continue;
        }
        let is_view = row.table_type.eq_ignore_ascii_case("VIEW");
        let mut details = serde_json::Map::new();
        if let Some(engine) = row.engine {
            details.insert("engine".into(), json!(engine));
        }
        if let Some(created) = row.create_time {
            details.insert("created_at".into(), json!(created));
        }
        if let Some(updated) = row.update_time {
            details.insert("updated_at".into(), json!(updated));
        }
        by_name.insert(
            (row.table_schema.clone(), row.table_name.clone()),
            out.len(),
        );
        out.push(TableInfo {
            schema: row.table_schema,
            name: row.table_name,
            kind: if is_view { "view" } else { "table" }.to_owned(),
            owner: None,
            // MySQL reports "VIEW" as the comment of every view.
            comment: row
                .table_comment
                .filter(|c| !(c.is_empty() || is_view && c == "VIEW")),
            row_estimate: if is_view { None } else { row.table_rows },
            total_bytes: if is_view { None } else { row.total_bytes },
            view_definition: row.view_definition,
            details: serde_json::Value::Object(details),
            columns: Vec::new(),
            constraints: Vec::new(),
            indexes: Vec::new(),
        });
    }
    for row in columns {
        let Some(&i) = by_name.get(&(row.table_schema, row.table_name)) else {
            continue;
        };
        let details = if row.extra.is_empty() {
            json!({})
        } else {
            json!({ "extra": row.extra })
        };
        out[i].columns.push(ColumnInfo {
            position: row.ordinal_position as i32,
            name: row.column_name,
            data_type: row.column_type,
            nullable: row.is_nullable.eq_ignore_ascii_case("YES"),
            default_value: row.column_default,
            comment: Some(row.column_comment).filter(|c| !c.is_empty()),
            details,
        });
    }
    for row in key_columns {
        let Some(&i) = by_name.get(&(row.table_schema, row.table_name)) else {
            continue;
        };
        let kind = match row.constraint_type.as_str() {
            "PRIMARY KEY" => ConstraintKind::PrimaryKey,
            "FOREIGN KEY" => ConstraintKind::ForeignKey,
            _ => ConstraintKind::Unique,
        };
        let name = row.constraint_name;
        let constraints = &mut out[i].constraints;
        let existing = constraints
            .iter()
            .position(|c| c.name == name && c.kind == kind);
        let index = match existing {
            Some(index) => index,
            None => {
                constraints.push(ConstraintInfo {
                    name,
                    kind,
                    columns: Vec::new(),
                    references: None,
                    definition: None,
                });
                constraints.len() - 1
            }
        };
        let constraint = &mut constraints[index];
        if let Some(column) = row.column_name {
            constraint.columns.push(column);
        }
        if let (Some(schema), Some(table)) =
            (row.referenced_table_schema, row.referenced_table_name)
        {
            let target = constraint.references.get_or_insert(ForeignKeyTarget {
                schema,
                table,
                columns: Vec::new(),
            });
            target.columns.extend(row.referenced_column_name);
        }
    }
    for row in checks {
        if let Some(&i) = by_name.get(&(row.constraint_schema, row.table_name)) {
            out[i].constraints.push(ConstraintInfo {
                name: row.constraint_name,
                kind: ConstraintKind::Check,
                columns: Vec::new(),
                references: None,
                definition: Some(row.check_clause),
            });
        }
    }
    // One order whatever the statement each kind came from, so fingerprints are stable.
    for table in &mut out {
        table
            .constraints
            .sort_by(|a, b| (&a.name, a.kind).cmp(&(&b.name, b.kind)));
    }
    for row in index_columns {
        let Some(&i) = by_name.get(&(row.table_schema, row.table_name)) else {
            continue;
        };
        let name = row.index_name;
        let indexes = &mut out[i].indexes;
        let index = match indexes.iter().position(|x| x.name == name) {
            Some(index) => index,
            None => {
                indexes.push(IndexInfo {
                    primary: name == "PRIMARY",
                    name,
                    columns: Vec::new(),
                    expression: row.expression,
                    unique: row.non_unique == 0,
                    method: row.index_type.to_lowercase(),
                });
                indexes.len() - 1
            }
        };
        indexes[index].columns.extend(row.column_name);
    }
    DatabaseSnapshot {
        name: database.to_owned(),
        schemas: schemas
            .into_iter()
            .filter(|row| filters.schema_included(&row.schema_name))
            .map(|row| SchemaInfo {
                name: row.schema_name,
                owner: None,
                comment: row.schema_comment,
            })
            .collect(),
        tables: out,
    }
}
